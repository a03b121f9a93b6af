"""Properties over generated data (hypothesis, polars' parametric frames): the data contract, the metrics and the
content hash hold for any input, not only the ones a test author thought of.

- validate: any frame passes the contract or fails with reasons that name its columns; it raises nothing but
  keel's errors, and every bad row is a row of the batch with a reason naming a column.
- classification_metrics: for any labels and probabilities, degenerate ones included, every figure stays in its
  range (ROC AUC None exactly when a class is absent); inputs that are no probabilities are keel errors.
- the content hash (frame_bytes, then SHA-256, as keel hashes derived datasets): two frames that differ in a
  cell, a column name, the column order or a dtype hash differently; the same frame, however chunked, the same.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import polars as pl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from polars.testing.parametric import column, dataframes, series

from keel.core.config import ContractConfig, parse_config
from keel.core.data.batches import frame_bytes
from keel.core.data.contract import Contract, Validation, learn_contract, validate
from keel.core.data.features import feature_spec
from keel.core.errors import KeelError
from keel.core.model.evaluate import classification_metrics

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(BOUNDED, max_examples=100)  # for the costlier examples: every dtype, several hashes each

# every dtype polars' strategies make that a batch file can hold (Object cannot be written to Parquet)
BATCH_DTYPES = [
    pl.Boolean, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64, pl.Float32,
    pl.Float64, pl.Decimal, pl.String, pl.Binary, pl.Date, pl.Datetime, pl.Duration, pl.Time, pl.Categorical,
    pl.Null, pl.List, pl.Array, pl.Struct,
]


# --- the data contract ------------------------------------------------------------------------------------

REFERENCE = pl.DataFrame({
    "id": [f"r{i}" for i in range(8)],
    "x": [0.5, -1.0, 2.0, 3.5, None, 0.0, 1.5, -2.5],
    "n": [1, 2, 3, 4, 5, 6, 7, 8],
    "c": ["a", "b", "a", "c", "b", "a", None, "c"],
    "y": [0, 1, 0, 1, 1, 0, 0, 1],
})
CFG = parse_config({"model": "m", "target": "y", "positive": 1, "id": "id", "categorical": ["c"],
                    "contract": {"ranges": {"x": [-3, 3], "n": [0, 10]}, "max_bad_share": 0.2}})
FIXED = learn_contract(REFERENCE, feature_spec(CFG, REFERENCE), CFG.contract.ranges)


def _named(reason: str, columns: list[str]) -> str | None:
    """The batch column a row's reason names: '<col> ...' or 'label <col> ...'."""
    for col in sorted(columns, key=len, reverse=True):
        if reason.startswith(f"{col} ") or reason.startswith(f"label {col} "):
            return col
    return None


def _check(frame: pl.DataFrame, contract: Contract, rules: ContractConfig) -> Validation | None:
    try:
        result = validate(frame, contract, rules)
    except KeelError:
        return None
    assert result.rows == frame.height
    json.dumps(result.to_dict())  # stored as the stage's detail and the run's summary
    assert 0.0 <= result.bad_share <= 1.0
    for index, reason in result.bad:
        assert 0 <= index < frame.height, (index, reason)
        assert _named(reason, frame.columns) is not None, reason
    if result.batch_reason is not None:
        reason = result.batch_reason
        assert "\n" not in reason and reason
        named = any(f"'{c}'" in reason for c in contract.columns)
        assert named or "break the data contract" in reason or reason == "the batch has no rows", reason
        if "break the data contract" in reason:
            assert result.bad_share > rules.max_bad_share
    else:
        assert result.bad_share <= rules.max_bad_share
    return result


@st.composite
def batches_for(draw: st.DrawFn, contract: Contract, extra: bool = True) -> pl.DataFrame:
    """A batch with some of the contract's columns (each of any dtype, any values) and perhaps others."""
    names = [c for c in (*contract.columns, contract.id) if c]
    keep = draw(st.lists(st.sampled_from(names), unique=True, min_size=max(0, len(names) - 2)))
    cols = [column(name, dtype=draw(st.sampled_from(BATCH_DTYPES))) for name in keep]
    if extra:
        cols += [column(f"extra_{i}") for i in range(draw(st.integers(0, 2)))]
    return draw(dataframes(cols or [column("extra_0")], min_size=0, max_size=12))


@FEWER
@given(frame=batches_for(FIXED))
def test_any_batch_passes_or_fails_the_contract_with_named_reasons(frame):
    _check(frame, FIXED, CFG.contract)


@st.composite
def like_reference(draw: st.DrawFn) -> pl.DataFrame:
    """The reference's columns and dtypes with generated values: the batches a contract mostly sees."""
    cols = [column("id", dtype=pl.String, unique=True), column("x", dtype=pl.Float64), column("n", dtype=pl.Int64),
            column("c", dtype=pl.String), column("y", dtype=pl.Int64, strategy=st.sampled_from([0, 1, 2]))]
    return draw(dataframes(cols, min_size=1, max_size=20, allow_null={"id": True, "x": True, "c": True, "y": True,
                                                                       "n": False}))


@BOUNDED
@given(frame=like_reference(), max_bad_share=st.floats(0, 1))
def test_row_checks_find_every_bad_row_of_a_well_typed_batch(frame, max_bad_share):
    rules = ContractConfig(max_bad_share=max_bad_share, ranges=CFG.contract.ranges)
    result = _check(frame, FIXED, rules)
    assert result is not None, "a batch of the right types is judged, never refused by an error"
    bad = set(result.bad_indices)
    for i, row in enumerate(frame.iter_rows(named=True)):
        x, ids = row["x"], frame["id"].to_list()
        broken = (
            (x is not None and (math.isnan(x) or math.isinf(x) or not -3 <= x <= 3))
            or not 0 <= row["n"] <= 10
            or (row["y"] is not None and row["y"] not in (0, 1))
            or row["id"] is None or ids.count(row["id"]) > 1
        )
        if result.batch_reason is None or "break the data contract" in result.batch_reason:
            assert (i in bad) == broken, (i, row, result.bad)


@BOUNDED
@given(reference=dataframes(min_cols=1, max_cols=4, min_size=1, max_size=10, allowed_dtypes=BATCH_DTYPES),
       data=st.data())
def test_a_contract_learned_from_any_frame_judges_any_batch(reference, data):
    """The reference too is generated: learning from it is a keel error or a contract every batch can meet."""
    cfg = parse_config({"model": "m", "target": reference.columns[0], "positive": "1"})
    try:
        contract = learn_contract(reference, feature_spec(cfg, reference))
    except KeelError:
        return
    assert _check(reference, contract, cfg.contract) is not None
    _check(data.draw(batches_for(contract)), contract, cfg.contract)


# --- metrics ---------------------------------------------------------------------------------------------------

PROBABILITY = st.floats(0.0, 1.0)  # the ends included: a model can be certain


@st.composite
def labelled_scores(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 60))
    labels = draw(st.sampled_from(["mixed", "all 0", "all 1"]))
    if labels == "mixed":
        y = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    else:
        y = [int(labels == "all 1")] * n
    shape = draw(st.sampled_from(["any", "constant", "certain", "perfect", "inverted"]))
    if shape == "any":
        p = draw(st.lists(PROBABILITY, min_size=n, max_size=n))
    elif shape == "constant":
        p = [draw(PROBABILITY)] * n
    elif shape == "certain":
        p = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    else:
        p = [float(v == (shape == "perfect")) for v in y]
    return np.array(y), np.array(p, dtype=np.float64)


@BOUNDED
@given(scores=labelled_scores(), threshold=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True))
def test_metrics_stay_in_their_ranges_for_any_labels_and_probabilities(scores, threshold):
    y, p = scores
    m = classification_metrics(y, p, threshold)
    for name in ("accuracy", "precision", "recall", "f1", "brier"):
        assert 0.0 <= m[name] <= 1.0, (name, m[name])
    assert (m["roc_auc"] is None) == (len(set(y.tolist())) < 2)
    assert m["roc_auc"] is None or 0.0 <= m["roc_auc"] <= 1.0
    assert math.isfinite(m["log_loss"]) and m["log_loss"] >= 0.0
    (tn, fp), (fn, tp) = m["confusion"]
    assert min(tn, fp, fn, tp) >= 0 and tn + fp + fn + tp == m["n"] == y.size and tp + fn == m["positives"]
    json.dumps(m)  # stored as metric points and in the run's summary


@BOUNDED
@given(y=st.lists(st.integers(-1, 2), min_size=0, max_size=20),
       p=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=20))
def test_metrics_take_any_input_and_answer_or_raise_a_keel_error(y, p):
    try:
        m = classification_metrics(np.array(y), np.array(p, dtype=np.float64))
    except KeelError:
        return
    assert set(y) <= {0, 1} and len(p) == len(y) > 0 and all(0.0 <= v <= 1.0 for v in p)
    assert math.isfinite(m["log_loss"]) and m["log_loss"] >= 0.0 and 0.0 <= m["brier"] <= 1.0


# --- the content hash -------------------------------------------------------------------------------------------


def content_hash(frame: pl.DataFrame) -> str:
    return hashlib.sha256(frame_bytes(frame)).hexdigest()


FRAMES = dataframes(min_cols=1, max_cols=4, min_size=1, max_size=8, allowed_dtypes=BATCH_DTYPES)


@FEWER
@given(frame=FRAMES, data=st.data())
def test_a_changed_cell_changes_the_hash(frame, data):
    name = data.draw(st.sampled_from(frame.columns))
    row = data.draw(st.integers(0, frame.height - 1))
    value = data.draw(series(dtype=frame.schema[name], min_size=1, max_size=1, name=name))
    changed = pl.concat([frame[:row], frame[row:row + 1].with_columns(value), frame[row + 1:]])
    assume(not changed.equals(frame))
    assert content_hash(changed) != content_hash(frame)


@FEWER
@given(frame=FRAMES, data=st.data())
def test_a_renamed_column_changes_the_hash(frame, data):
    name = data.draw(st.sampled_from(frame.columns))
    new = data.draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in frame.columns))
    assert content_hash(frame.rename({name: new})) != content_hash(frame)


@FEWER
@given(frame=dataframes(min_cols=2, max_cols=4, min_size=0, max_size=8, allowed_dtypes=BATCH_DTYPES), data=st.data())
def test_another_column_order_changes_the_hash(frame, data):
    order = list(data.draw(st.permutations(frame.columns)))
    if order == frame.columns:
        order.reverse()
    assert content_hash(frame.select(order)) != content_hash(frame)


CASTS = [pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64, pl.Float32, pl.Float64,
         pl.String, pl.Categorical, pl.Boolean, pl.Date, pl.Datetime("ms"), pl.Datetime("us"), pl.Datetime("ns")]


@FEWER
@given(frame=FRAMES, data=st.data())
def test_another_dtype_changes_the_hash(frame, data):
    """Every cast polars makes of a column to another dtype (the values may come through unchanged) shows."""
    name = data.draw(st.sampled_from(frame.columns))
    assume(not frame.schema[name].is_nested())  # polars panics casting some nested columns to scalars
    before = content_hash(frame)
    for dtype in CASTS:
        if frame.schema[name] == dtype:
            continue
        try:
            cast = frame.with_columns(pl.col(name).cast(dtype))
        except pl.exceptions.PolarsError:
            continue
        assert content_hash(cast) != before, (frame.schema[name], dtype)


@FEWER
@given(frame=FRAMES)
def test_the_same_frame_hashes_the_same_however_it_is_chunked(frame):
    assert content_hash(frame) == content_hash(frame.rechunk()) == content_hash(frame.clone())

"""Reading batches, labels, features and the data contract."""

from __future__ import annotations

import polars as pl
import pytest

from keel.core.config import parse_config
from keel.core.data.artifacts import Artifacts
from keel.core.data.batches import read_batch, short_rows
from keel.core.data.contract import learn_contract, validate
from keel.core.data.features import feature_spec, label_array
from keel.core.errors import ChecksumMismatch, ConfigError, DataError, UsageError


def test_read_batch_gives_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_batch(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_batch(empty)
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(DataError, match="no rows"):
        read_batch(header)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match="cannot read parquet") as info:
        read_batch(corrupt)
    assert "\n" not in str(info.value)
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        read_batch(odd)


@pytest.mark.parametrize(
    ("labels", "positive", "expected"),
    [
        (["Yes", "No", "Yes", None], None, [1.0, 0.0, 1.0, None]),
        ([1, 0, 0, 1], None, [1.0, 0.0, 0.0, 1.0]),
        ([True, False, None, True], None, [1.0, 0.0, None, 1.0]),
        (["good", "bad", "bad"], "bad", [0.0, 1.0, 1.0]),
    ],
)
def test_labels_map_to_zero_one(labels, positive, expected):
    cfg = parse_config({"model": "m", "target": "y", **({"positive": positive} if positive else {})})
    frame = pl.DataFrame({"x": list(range(len(labels))), "y": labels}, strict=False)
    spec = feature_spec(cfg, frame)
    got = label_array(frame, spec).tolist()
    assert [None if g != g else g for g in got] == expected


def test_ambiguous_string_labels_ask_for_positive():
    cfg = parse_config({"model": "m", "target": "y"})
    frame = pl.DataFrame({"x": [1, 2], "y": ["good", "bad"]})
    with pytest.raises(ConfigError, match="set 'positive'"):
        feature_spec(cfg, frame)


def test_features_exclude_target_id_timestamp_and_excluded():
    cfg = parse_config({"model": "m", "target": "y", "id": "i", "timestamp": "t", "exclude": ["leak"]})
    frame = pl.DataFrame({"i": [1], "t": ["2013"], "leak": [3], "colour": ["red"], "x": [1.0], "y": [1]})
    spec = feature_spec(cfg, frame)
    assert spec.features == ["colour", "x"] and spec.categorical == ["colour"]


def _contract_cfg(**contract):
    return parse_config({"model": "m", "target": "y", "id": "i", "contract": contract})


def test_contract_flags_rows_with_reasons_and_rejects_over_threshold():
    cfg = _contract_cfg(ranges={"x": [0, 10]}, max_bad_share=0.2)
    ref = pl.DataFrame({"i": [1, 2, 3], "x": [1.0, 2.0, 3.0], "y": ["Yes", "No", "Yes"]})
    contract = learn_contract(ref, feature_spec(cfg, ref), cfg.contract.ranges)
    batch = pl.DataFrame({"i": list(range(10)), "x": [1.0] * 9 + [50.0], "y": ["Yes"] * 8 + ["Maybe", None]})
    result = validate(batch, contract, cfg.contract)
    assert result.batch_reason is None
    assert sorted(result.bad) == [(8, "label y not in ['No', 'Yes']"), (9, "x outside [0, 10]")]
    worse = batch.with_columns(pl.Series("x", [50.0] * 5 + [1.0] * 5))
    assert "break the data contract" in validate(worse, contract, cfg.contract).batch_reason


def test_contract_rejects_missing_columns_wrong_types_and_null_floods():
    cfg = _contract_cfg()
    ref = pl.DataFrame({"i": [1, 2], "x": [1.0, 2.0], "c": ["a", "b"], "y": [1, 0]})
    contract = learn_contract(ref, feature_spec(cfg, ref), cfg.contract.ranges)
    assert "missing" in validate(ref.drop("x"), contract, cfg.contract).batch_reason
    assert "contract says numeric" in validate(ref.with_columns(pl.lit("z").alias("x")), contract, cfg.contract).batch_reason
    nulls = ref.with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    assert "null" in validate(nulls, contract, cfg.contract).batch_reason
    dupes = pl.DataFrame({"i": [1, 1], "x": [1.0, 2.0], "c": ["a", "b"], "y": [1, 0]})
    assert any("duplicated" in r for _, r in validate(dupes, contract, cfg.contract).bad)


def test_contract_quarantines_rows_outside_a_declared_category_set():
    cfg = _contract_cfg(categories={"carrier": ["AA", "UA", "9E"], "code": ["1", "2"]}, max_bad_share=0.5)
    ref = pl.DataFrame({"i": [1, 2], "carrier": ["AA", "UA"], "code": [1, 2], "y": [1, 0]})
    contract = learn_contract(ref, feature_spec(cfg, ref), cfg.contract.ranges, cfg.contract.categories)
    batch = pl.DataFrame({"i": [1, 2, 3, 4, 5], "carrier": ["AA", "9E", "ZZ", None, "UA"], "code": [1, 2, 2, 1, 7],
                          "y": [1, 0, 1, 0, 1]})
    assert sorted(validate(batch, contract, cfg.contract).bad) == [
        (2, "carrier not in the declared categories (AA, UA, 9E)"),  # an unseen carrier; a null is the null check's
        (4, "code not in the declared categories (1, 2)"),  # numbers are compared as text
    ]
    undeclared = learn_contract(ref, feature_spec(cfg, ref))
    assert validate(batch, undeclared, cfg.contract).bad == []  # learned contracts do not pin categories


def test_short_csv_lines_are_bad_rows_not_silent_nulls():
    data = b'i,x,y\n1,0.5,1\n2,0.7\n\n"4",0.1,0\n5,,1\n'
    frame = pl.read_csv(data, infer_schema_length=None, null_values=["", "NA"])
    assert frame.height == 5 and frame["y"].null_count() == 2  # polars fills the cut line and the blank one
    short = short_rows(frame, lambda: data)
    assert short == [(1, "short line: 2 of 3 fields"), (2, "short line: a blank line")]  # row 4's empty x is a value
    cfg = _contract_cfg(max_bad_share=0.5)
    contract = learn_contract(frame, feature_spec(cfg, frame))
    assert set(short) <= set(validate(frame, contract, cfg.contract, short).bad)
    whole = b"i,x,y\n1,0.5,1\n2,0.7,0\n"
    assert short_rows(pl.read_csv(whole), lambda: whole) == []


def test_an_empty_declared_category_set_is_refused():
    with pytest.raises(ConfigError, match="categories of 'carrier' are empty"):
        _contract_cfg(categories={"carrier": []})


def test_artifacts_are_content_addressed_and_verified(tmp_path):
    store = Artifacts(tmp_path)
    sha, path = store.put_bytes(b"model text", ".txt")
    assert store.put_bytes(b"model text", ".txt") == (sha, path)
    assert store.read_verified(path, sha) == b"model text"
    path.write_bytes(b"model texT")
    with pytest.raises(ChecksumMismatch, match="does not match"):
        store.read_verified(path, sha)


@pytest.mark.parametrize("times", [
    ["2013-01-01 05:00:00", "2013-01-01 05:00:00", "2013-01-01 06:00:00", None, "not a time", "2013-01-02 23:00:00"],
    ["2013-01-01T05:00:00+01:00", "2013-01-01T05:00:00+01:00", "2013-07-01T06:30:00-04:00"],
    ["2013-01-01", "2013-01-01", "2013-02-28"],
])
def test_a_time_column_parses_the_same_by_distinct_value_and_whole(times, monkeypatch):
    """Short time columns are parsed one distinct string at a time, long ones whole (memory): the same times."""
    from keel.core.data import batches

    frame = pl.DataFrame({"t": times * 50}, schema={"t": pl.String})
    by_distinct = batches.utc_times(frame, "t")
    monkeypatch.setattr(batches, "DISTINCT_PARSE_ROWS", 10)
    whole = batches.utc_times(frame, "t")
    assert by_distinct is not None and whole is not None
    assert by_distinct.to_list() == whole.to_list() and by_distinct.dtype == whole.dtype
    assert by_distinct.null_count() < len(frame)

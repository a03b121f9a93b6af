"""The pipeline's stages as plain functions over content hashes; flows/ wraps them as tasks."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlmodel import col, select

from keel.core.config import ContractConfig, DriftConfig, GateConfig
from keel.core.data.artifacts import Artifacts
from keel.core.data.batches import (
    batch_format,
    check_file,
    frame_bytes,
    read_batch,
    short_rows,
    snapshot_file,
    time_span,
)
from keel.core.data.contract import Contract, learn_contract, validate
from keel.core.data.features import ColumnRoles, FeatureSpec, feature_spec, label_array, require_roles
from keel.core.errors import DataError
from keel.core.faults import crash_point
from keel.core.memo import Memo
from keel.core.pipeline.holdout import split
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.store.models import DatasetVersion, ModelVersion, PipelineRun
from keel.core.workspace import Workspace


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- ingest ------------------------------------------------------------------------------------


def ingest(ws: Workspace, path: str) -> dict[str, Any]:
    """Hash the batch, keep an immutable copy, register its dataset version. `path` is a file or any fsspec
    URL (an inbox on object storage): a remote batch is fetched to KEEL_HOME/incoming first."""
    src, source = local_batch(ws, path)
    # one copy, hashed as it is made, is read and stored: a file changing meanwhile cannot split hash from bytes
    snap, sha = snapshot_file(src, ws.settings.home_path / "incoming", name=path)
    try:
        frame = read_batch(snap, name=path)  # raises a one-line error for missing, empty or corrupt files
        _, dest = ws.artifacts.put_file(snap, sha)
        crash_point("ingest:stored")
    finally:
        snap.unlink(missing_ok=True)
    _FRAMES.put((ws.settings.artifacts_root, sha), frame)  # what load_dataset would read back: the bytes just stored
    labelled = frame.height - frame[ws.cfg.target].null_count() if ws.cfg.target in frame.columns else 0
    start, end = time_span(frame, ws.cfg.timestamp)
    row = {"id": sha, "kind": "batch", "source": source, "format": batch_format(src),
           "rows": frame.height, "labelled_rows": labelled, "columns": frame.columns, "artifact_uri": str(dest),
           "data_from": start, "data_to": end}
    records.register_dataset(ws, row)
    return row


def local_batch(ws: Workspace, path: str) -> tuple[Path, str]:
    """The batch as a local file, and the source to record: a path as it is, a URL fetched once."""
    if "://" not in path or path.startswith("file://"):
        src = Path(path.removeprefix("file://"))
        check_file(src, path)  # a link loop, a folder or a pipe: one line, before resolve() meets it
        return src, str(src.resolve())
    from fsspec.core import url_to_fs

    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise DataError(f"{path}: not a batch file")
    local = ws.settings.home_path / "incoming" / hashlib.sha256(path.encode()).hexdigest()[:16] / name
    try:
        fs, remote = url_to_fs(path)
        if not fs.isfile(remote):
            raise DataError(f"{path}: no such file")
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{name}.partial")
        fs.get_file(remote, str(partial))
        partial.replace(local)  # a half-fetched file never has the batch's name
    except DataError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"{path}: cannot be fetched: {exc}") from None
    return local, path


def preflight(ws: Workspace, path: str) -> None:
    """Fail fast, before anything is written: the file must be readable and carry the target column, and the
    artifact store's settings must hold (a bad KEEL_ARTIFACTS_OPTIONS)."""
    _ = ws.artifacts
    frame = read_batch(path)
    if ws.cfg.target not in frame.columns:
        raise DataError(f"{path}: target column '{ws.cfg.target}' is missing (columns: {', '.join(frame.columns[:10])})")
    if records.has_production(ws):  # its contract judges the batch (types, labels): quarantined rows, exit 3
        require_roles(ws.cfg, frame)
    else:  # the run learns the contract and the model from this batch
        feature_spec(ws.cfg, frame)


_FRAMES: Memo[pl.DataFrame] = Memo(6)


def load_dataset(ws: Workspace, dataset_id: str) -> pl.DataFrame:
    """The dataset version's frame, read from its verified artifact. Dataset versions are immutable and
    content-addressed, so the last few frames read are kept in memory (a run reads each several times)."""
    return _FRAMES.get((ws.settings.artifacts_root, dataset_id), lambda: _read_dataset(ws, dataset_id))


@unit_of_work
def _read_dataset(ws: Workspace, dataset_id: str) -> pl.DataFrame:
    with ws.session() as session:
        dv = session.get(DatasetVersion, dataset_id)
    if dv is None:
        raise DataError(f"dataset version {dataset_id[:12]} is not in the store")
    data = ws.artifacts.read_verified(dv.artifact_uri, dataset_id)
    if dv.format == "csv":
        return pl.read_csv(io.BytesIO(data), infer_schema_length=None, null_values=["", "NA"])
    return pl.read_parquet(io.BytesIO(data))


def without_rows(frame: pl.DataFrame, bad: list[int]) -> pl.DataFrame:
    if not bad:
        return frame
    keep = np.ones(frame.height, dtype=bool)
    keep[bad] = False
    return frame.filter(pl.Series(keep))


# --- the production model ----------------------------------------------------------------------


def model_ref(mv: ModelVersion) -> dict[str, Any]:
    """What tasks need to use a model version: JSON-safe, its identity is the artifact hash, and nothing in it
    says where the store is (the artifact by its key inside the artifact store), so it keys caches anywhere."""
    return {"id": mv.id, "version": mv.version, "sha256": mv.artifact_sha256, "uri": Artifacts.key(mv.artifact_uri),
            "spec": mv.spec, "categories": mv.categories, "importance": mv.importance, "contract": mv.contract,
            "train_dataset_id": mv.train_dataset_id, "holdout_dataset_id": mv.holdout_dataset_id,
            "train_metrics": mv.train_metrics}


def scorer(ref: dict[str, Any]) -> dict[str, Any]:
    """The part of a model reference that scoring reads: the artifact, the feature spec and the categories."""
    return {k: ref[k] for k in ("sha256", "uri", "spec", "categories")}


def drift_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """The part of a model reference that drift reads: the scorer, feature importance and the holdout."""
    return {**scorer(ref), "importance": ref["importance"], "holdout_dataset_id": ref.get("holdout_dataset_id")}


@unit_of_work
def version_ref(ws: Workspace, version_id: int | None) -> dict[str, Any] | None:
    if version_id is None:
        return None
    with ws.session() as session:
        mv = session.get(ModelVersion, version_id)
        return model_ref(mv) if mv else None


_BOOSTERS: Memo[Any] = Memo(4)


def load_model(ws: Workspace, ref: dict[str, Any]) -> Any:
    """The model version's booster. Its artifact is read and its SHA-256 verified on every load; parsing the text
    (about 70 ms for the demo's models) is done once per process for each SHA-256: the same bytes give the same
    model."""
    text = ws.artifacts.read_verified(ref["uri"], ref["sha256"]).decode()
    return parsed_model(ref["sha256"], text)


def parsed_model(sha256: str, text: str) -> Any:
    """The booster of a model text whose SHA-256 is ``sha256``, parsed once per process."""
    from keel.core.model.train import load_booster

    return _BOOSTERS.get(sha256, lambda: load_booster(text))


def spec_of(ref: dict[str, Any]) -> FeatureSpec:
    return FeatureSpec(**ref["spec"])


def contract_for(frame: pl.DataFrame, production: dict[str, Any] | None, columns: ColumnRoles,
                 declared: ContractConfig) -> dict[str, Any]:
    """The production model's contract, or one learned from this first batch; the declared ranges and category
    sets always follow keel.toml."""
    if production and production.get("contract"):
        contract = Contract.from_dict(production["contract"])
        contract.ranges, contract.categories = dict(declared.ranges), dict(declared.categories)
        return contract.to_dict()
    return learn_contract(frame, feature_spec(columns, frame), declared.ranges, declared.categories).to_dict()


@unit_of_work
def validate_batch(ws: Workspace, dataset_id: str, contract: dict[str, Any], rules: ContractConfig) -> dict[str, Any]:
    """The batch against the contract under keel.toml's [contract] limits: bad rows, or a reason to reject it."""
    frame = load_dataset(ws, dataset_id)
    with ws.session() as session:
        dv = session.get(DatasetVersion, dataset_id)
    short = (short_rows(frame, lambda: ws.artifacts.read_verified(dv.artifact_uri, dataset_id))
             if dv is not None and dv.format == "csv" else [])
    result = validate(frame, Contract.from_dict(contract), rules, short)
    return {**result.to_dict(), "bad": result.bad}


_SCORES: Memo[np.ndarray] = Memo(6)


def score(ws: Workspace, dataset_id: str, production: dict[str, Any], bad: list[int]) -> np.ndarray:
    """The production model's P(positive) on the batch's good rows (a model and a dataset version never
    change, so the last few answers are kept: drift and the estimate score the holdout again)."""
    from keel.core.model.train import predict

    def predicted() -> np.ndarray:
        frame = without_rows(load_dataset(ws, dataset_id), bad)
        return predict(load_model(ws, production), frame, spec_of(production), production["categories"])

    return _SCORES.get((production["sha256"], dataset_id, tuple(bad)), predicted).copy()


def drift(ws: Workspace, reference_id: str, dataset_id: str, production: dict[str, Any], bad: list[int],
          settings: DriftConfig, ref_scores: np.ndarray | None = None,
          cur_scores: np.ndarray | None = None) -> dict[str, Any]:
    """Input drift per feature against the reference, plus prediction and label drift, under [drift]."""
    from keel.core.drift.detect import detect_drift, label_drift, score_drift

    spec = spec_of(production)
    reference = load_dataset(ws, reference_id)
    current = without_rows(load_dataset(ws, dataset_id), bad)
    report = detect_drift(reference, current, spec.features, spec.categorical, settings, production["importance"])
    out = report.to_dict()
    if ref_scores is not None and cur_scores is not None:
        out["prediction"] = score_drift(ref_scores, cur_scores, settings).to_dict()
    if spec.target in current.columns and current[spec.target].null_count() < current.height:
        ref_y, cur_y = label_array(reference, spec), label_array(current, spec)
        out["label"] = label_drift(ref_y[~np.isnan(ref_y)], cur_y[~np.isnan(cur_y)], settings).to_dict()
    return out


def monitor(ws: Workspace, dataset_id: str, production: dict[str, Any], scores: np.ndarray,
            bad: list[int], threshold: float) -> dict[str, Any] | None:
    """Production metrics on a labelled batch at the [monitor] threshold, and the confusion-matrix drift test."""
    from keel.core.model.evaluate import classification_metrics, confusion_drift

    frame = without_rows(load_dataset(ws, dataset_id), bad)
    spec = spec_of(production)
    if spec.target not in frame.columns:
        return None
    y = label_array(frame, spec)
    mask = ~np.isnan(y)
    if mask.sum() == 0:
        return None
    metrics = classification_metrics(y[mask].astype(int), scores[mask], threshold)
    baseline = (production.get("train_metrics") or {}).get("confusion")
    if baseline:
        metrics["confusion_drift"] = confusion_drift(baseline, metrics["confusion"])
    return metrics


# --- deciding to retrain -----------------------------------------------------------------------


@unit_of_work
def model_runs(ws: Workspace) -> list[PipelineRun]:
    with ws.session() as session:
        return list(session.exec(
            select(PipelineRun).where(PipelineRun.model_name == ws.cfg.model, PipelineRun.replay_of == None,  # noqa: E711
                                      PipelineRun.status == "completed").order_by(col(PipelineRun.started_at))
        ).all())


def should_retrain(ws: Workspace, production: dict[str, Any] | None, labelled: int, n_drifted: int,
                   metrics: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """Retrain on schedule, drift or a performance drop, never within the cool-down."""
    rc = ws.cfg.retrain
    if labelled == 0:
        return False, ["the batch has no labels: nothing to train on"]
    if production is None:
        return True, ["no production model yet: training the first one"]
    runs = model_runs(ws)
    trained = [i for i, r in enumerate(runs) if r.model_version_id is not None]
    since = len(runs) - 1 - trained[-1] if trained else len(runs)
    reasons = []
    if rc.every and since + 1 >= rc.every:
        reasons.append(f"schedule: {since + 1} batches since the last training (every {rc.every})")
    if rc.on_drift and n_drifted >= rc.min_drifted:
        reasons.append(f"drift: {n_drifted} feature(s) drifted")
    metric = ws.cfg.monitor.metric
    base = (production.get("train_metrics") or {}).get(metric)
    now = (metrics or {}).get(metric)
    if rc.on_drop and base is not None and now is not None and base - now >= ws.cfg.monitor.max_drop:
        reasons.append(f"performance: {metric} {now:.3f} on this batch, {base:.3f} at training (drop {base - now:.3f})")
    if not reasons:
        return False, ["no drift, no performance drop, not due: production kept"]
    if since < rc.cooldown:
        return False, [*reasons, f"but in cool-down ({since} of {rc.cooldown} batches since the last training)"]
    return True, reasons


@unit_of_work
def training_window(ws: Workspace, current_id: str) -> list[str]:
    """The last N labelled batches this model has processed, ending with the current one."""
    seen: list[str] = []
    for run in model_runs(ws):
        if run.batch_id and run.batch_id not in seen and run.batch_id != current_id:
            seen.append(run.batch_id)
    with ws.session() as session:
        labelled = set(session.exec(select(DatasetVersion.id).where(
            col(DatasetVersion.id).in_(seen), DatasetVersion.labelled_rows > 0)).all())
    window = [b for b in seen if b in labelled][-(ws.cfg.retrain.window - 1):] if ws.cfg.retrain.window > 1 else []
    return [*window, current_id]


def make_training_sets(ws: Workspace, window: list[str]) -> dict[str, Any]:
    """Training set and holdout from the labelled good rows of the window, under [retrain] holdout: the newest
    batch's last days with training strictly before them, or rows drawn at random (keel.core.pipeline.holdout)."""
    rc = ws.cfg.retrain
    parts = []
    for dataset_id in window:
        frame = without_rows(load_dataset(ws, dataset_id), records.quarantined_rows(ws, dataset_id))
        parts.append(frame.filter(pl.col(ws.cfg.target).is_not_null()))
    train, holdout = split(parts, ws.cfg.holdout, rc.holdout_share, rc.seed, ws.cfg.timestamp)
    out = {}
    for kind, frame in (("train", train), ("holdout", holdout)):
        sha, dest = ws.artifacts.put_bytes(frame_bytes(frame), ".parquet")
        start, end = time_span(frame, ws.cfg.timestamp)
        records.register_dataset(ws, {"id": sha, "kind": kind, "source": None, "format": "parquet",
                                      "rows": frame.height, "labelled_rows": frame.height,
                                      "columns": frame.columns, "artifact_uri": str(dest),
                                      "data_from": start, "data_to": end}, parents=window)
        out[kind] = sha
        crash_point(f"datasets:{kind}-registered")
    return out


def train(ws: Workspace, train_id: str, columns: ColumnRoles, params: dict[str, Any], rounds: int) -> dict[str, Any]:
    """A LightGBM candidate on the training set, with the feature spec and the contract of its data."""
    from keel.core.model.train import train_model

    frame = load_dataset(ws, train_id)
    spec = feature_spec(columns, frame)
    model = train_model(frame, spec, params, rounds)
    contract = learn_contract(frame, spec).to_dict()  # the declared ranges are applied per batch
    return {**asdict(model), "spec": spec.to_dict(), "contract": contract}


def evaluate(ws: Workspace, holdout_id: str, candidate: dict[str, Any], production: dict[str, Any] | None,
             threshold: float, alpha: float, n_boot: int) -> dict[str, Any]:
    """Candidate (and production) on the same holdout: metrics at the [monitor] threshold and the paired
    comparison at the [gate] alpha with n_boot bootstrap resamples."""
    from keel.core.model.evaluate import classification_metrics, compare_models
    from keel.core.model.train import predict

    frame = load_dataset(ws, holdout_id)
    spec = FeatureSpec(**candidate["spec"])
    y = label_array(frame, spec).astype(int)
    text = candidate["text"]
    cand_p = predict(parsed_model(hashlib.sha256(text.encode()).hexdigest(), text), frame, spec,
                     candidate["categories"])
    out: dict[str, Any] = {"candidate": classification_metrics(y, cand_p, threshold)}
    if production is not None:
        prod_p = predict(load_model(ws, production), frame, spec_of(production), production["categories"])
        out["production"] = classification_metrics(y, prod_p, threshold)
        comparison = compare_models(y, cand_p, prod_p, alpha=alpha, n_boot=n_boot,
                                    threshold=threshold)
        out["comparison"] = comparison.to_dict()
    return out


def gate(evaluation: dict[str, Any], drift_detected: bool, policy: GateConfig) -> dict[str, Any]:
    """The [gate] policy's decision on the evaluated candidate: promote, reject or review, with its reasons."""
    from keel.core.model.evaluate import Comparison, MetricComparison
    from keel.core.model.gate import decide

    comparison = None
    if "comparison" in evaluation:
        data = evaluation["comparison"]
        metrics = {k: MetricComparison(**v) for k, v in data["metrics"].items()}
        comparison = Comparison(**{**data, "metrics": metrics})
    return decide(policy, evaluation["candidate"], comparison, drift_detected=drift_detected).to_dict()


def batch_ids(ws: Workspace, dataset_id: str, bad: list[int], spec: FeatureSpec) -> tuple[pl.Series, np.ndarray]:
    """Row ids (the id column, else the row number in the file) and labels of the batch's good rows. The ids stay a
    polars column (not a list of Python strings: 10M of those took about 1 GB), written out in chunks."""
    frame = load_dataset(ws, dataset_id)
    if spec.id and spec.id in frame.columns:
        ids = frame[spec.id].cast(pl.String)
    else:
        ids = pl.int_range(frame.height, dtype=pl.Int64, eager=True).cast(pl.String)
    labels = label_array(frame, spec) if spec.target in frame.columns else np.full(frame.height, np.nan)
    if not bad:
        return ids, labels
    keep = np.ones(frame.height, dtype=bool)
    keep[bad] = False
    return ids.filter(pl.Series(keep)), labels[keep]

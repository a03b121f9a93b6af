"""run_pipeline: one batch through ingest, validate, score, drift, monitor, retrain, evaluate, gate.

Tasks take content hashes and parameters; their results are cached on those inputs and the task
source, so a rerun of the same batch is all cache hits. The logic lives in keel.core.pipeline.stages.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect: a worker loads this file by path in a fresh interpreter

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.context import get_run_context

from keel.core.config import Settings
from keel.core.errors import KeelError
from keel.core.monitoring import hooks as monitoring
from keel.core.pipeline import stages as core
from keel.core.registry import transactions as registry
from keel.core.store import records
from keel.core.workspace import Workspace

CACHED = (INPUTS - "wsref") + TASK_SOURCE


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O failures, never keel's own verdicts (a bad file stays bad)."""
    return not isinstance(state.result(raise_on_failure=False), KeelError)


IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15], "retry_jitter_factor": 0.5,
              "retry_condition_fn": _transient}


@lru_cache(maxsize=8)
def _open(wsref: str) -> Workspace:
    ref = json.loads(wsref)
    settings = Settings(home=Path(ref["home"]), database_url=ref["db"], artifacts_url=ref["artifacts"])
    return Workspace.open(ref["config"], settings)


def workspace_ref(config: str, home: str | None = None) -> str:
    """A JSON reference to a workspace that any worker process can open again."""
    base = Settings(home=Path(home)) if home else Settings()
    ws = Workspace.open(config, base)
    return json.dumps({"config": str(Path(config).resolve()), "home": str(ws.settings.home_path),
                       "db": ws.settings.db_url, "artifacts": str(ws.settings.artifacts_path)}, sort_keys=True)


@task(name="ingest", **IO_RETRIES)
def ingest(wsref: str, path: str) -> dict[str, Any]:
    """Hash the batch, store its immutable copy, register the dataset version."""
    return core.ingest(_open(wsref), path)


@task(name="validate", cache_policy=CACHED, persist_result=True)
def validate(wsref: str, dataset_id: str, contract: dict[str, Any]) -> dict[str, Any]:
    """Check the batch against the data contract."""
    return core.validate_batch(_open(wsref), dataset_id, contract)


@task(name="score", cache_policy=CACHED, persist_result=True)
def score(wsref: str, dataset_id: str, production: dict[str, Any], bad: list[int]) -> Any:
    """Score the batch with the production model."""
    return core.score(_open(wsref), dataset_id, production, bad)


@task(name="drift", cache_policy=CACHED, persist_result=True)
def drift(wsref: str, reference_id: str, dataset_id: str, production: dict[str, Any], bad: list[int],
          settings: dict[str, Any], scores: Any) -> dict[str, Any]:
    """Drift of inputs, predictions and labels against the production model's training data."""
    ws = _open(wsref)
    ref_scores = core.score(ws, production["holdout_dataset_id"], production, []) if production.get(
        "holdout_dataset_id") else None
    return core.drift(ws, reference_id, dataset_id, production, bad, ref_scores, scores)


@task(name="monitor", cache_policy=CACHED, persist_result=True)
def monitor(wsref: str, dataset_id: str, production: dict[str, Any], scores: Any, bad: list[int]) -> dict[str, Any] | None:
    """Production metrics on the labelled batch."""
    return core.monitor(_open(wsref), dataset_id, production, scores, bad)


@task(name="datasets", **IO_RETRIES)
def datasets(wsref: str, window: list[str]) -> dict[str, Any]:
    """Build and register the training set and the holdout from the window."""
    return core.make_training_sets(_open(wsref), window)


@task(name="train", cache_policy=CACHED, persist_result=True)
def train(wsref: str, train_id: str, params: dict[str, Any], rounds: int, code: str) -> dict[str, Any]:
    """Train a LightGBM candidate (cached on data, parameters and code)."""
    return core.train(_open(wsref), train_id, params, rounds)


@task(name="evaluate", cache_policy=CACHED, persist_result=True)
def evaluate(wsref: str, holdout_id: str, candidate: dict[str, Any], production: dict[str, Any] | None,
             gate_cfg: dict[str, Any]) -> dict[str, Any]:
    """Candidate and production on the same holdout."""
    return core.evaluate(_open(wsref), holdout_id, candidate, production)


class _Stages:
    """Runs tasks and records each as a stage_run row with its timing and cache outcome."""

    def __init__(self, ws: Workspace, run_id: str) -> None:
        self.ws, self.run_id = ws, run_id

    def __call__(self, name: str, fn: Any, *args: Any, detail: Any = None) -> Any:
        start = time.perf_counter()
        state = fn(*args, return_state=True)
        ms = (time.perf_counter() - start) * 1000
        if state.is_failed() or state.is_crashed():
            records.record_stage(self.ws, self.run_id, name, "failed", False, ms, {"error": str(state.message)})
        result = state.result()
        info = detail(result) if detail else None
        records.record_stage(self.ws, self.run_id, name, "completed", state.name == "Cached", ms, info)
        return result

    def skip(self, name: str, why: str) -> None:
        records.record_stage(self.ws, self.run_id, name, "skipped", False, 0.0, {"reason": why})


def _flow_run_id() -> str | None:
    try:
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    except Exception:  # pragma: no cover - outside a flow run
        return None


@flow(name="run_pipeline", log_prints=False, validate_parameters=False)
def run_pipeline(batch: str, config: str = "keel.toml", home: str | None = None) -> dict[str, Any]:
    """Take one batch through the whole pipeline; returns the run summary."""
    wsref = workspace_ref(config, home)
    ws = _open(wsref)
    run_id = records.start_run(ws, str(batch), _flow_run_id())
    try:
        return _pipeline(ws, wsref, run_id, str(batch))
    except BaseException as exc:
        error = str(exc)[:2000] or type(exc).__name__
        records.finish_run(ws, run_id, "failed", error=error)
        try:
            monitoring.after_run(ws, run_id, {"run_id": run_id, "status": "failed", "error": error,
                                              "model": ws.cfg.model, "batch": str(batch)})
        except Exception as alert_exc:  # the run's own error is the one to report
            get_run_logger().error("alerting on the failed run failed too: %s", alert_exc)
        raise


def _pipeline(ws: Workspace, wsref: str, run_id: str, batch: str) -> dict[str, Any]:
    stage = _Stages(ws, run_id)
    summary: dict[str, Any] = {"run_id": run_id, "model": ws.cfg.model, "batch": batch}
    ds = stage("ingest", ingest, wsref, batch, detail=lambda r: {"dataset_id": r["id"], "rows": r["rows"]})
    dataset_id = ds["id"]
    summary.update(dataset_version=dataset_id, rows=ds["rows"], labelled_rows=ds["labelled_rows"])
    prior = records.completed_run(ws, dataset_id)
    killed = records.unfinished_run(ws, dataset_id, run_id) if prior is None else None
    if prior is not None or killed is not None:  # judge against what production was the first time
        production = core.version_ref(ws, (prior or killed).production_before)  # type: ignore[union-attr]
    else:
        with ws.session() as session:
            mv = registry.production_version(session, ws.cfg.model)
            production = core.model_ref(mv) if mv else None
    records.update_run(ws, run_id, batch_id=dataset_id, production_before=production["id"] if production else None,
                       replay_of=prior.id if prior else None)

    frame = core.load_dataset(ws, dataset_id)
    contract = core.contract_for(ws, frame, production)
    checked = stage("validate", validate, wsref, dataset_id, contract,
                    detail=lambda r: {k: v for k, v in r.items() if k != "bad"})
    bad_rows = sorted({i for i, _ in checked["bad"]})
    if prior is None:
        ids = frame[ws.cfg.id].cast(str).to_list() if ws.cfg.id and ws.cfg.id in frame.columns else None
        records.record_quarantine(ws, dataset_id, checked["bad"], ids, checked["batch_reason"])
    summary["quarantined_rows"] = len(bad_rows)
    if checked["batch_reason"]:
        summary.update(status="quarantined", decision="quarantined", reasons=[checked["batch_reason"]],
                       drift=None, metrics=None, model_version=None)
        return _finish(ws, run_id, summary, production, "quarantined")

    drift_report, metrics = None, None
    if production is not None:
        spec = core.spec_of(production)
        scores = stage("score", score, wsref, dataset_id, production, bad_rows)
        if prior is None:  # a replay's predictions, drift report and metrics are the first run's, stored already
            ids, actual = core.batch_ids(ws, dataset_id, bad_rows, spec)
            records.record_predictions(ws, dataset_id, production["id"], ids, scores, actual,
                                       ws.cfg.monitor.threshold, run_id)
        drift_report = stage("drift", drift, wsref, production["train_dataset_id"], dataset_id, production,
                             bad_rows, ws.cfg.drift.model_dump(), scores,
                             detail=lambda r: {"detected": r["detected"], "drifted": r.get("drifted")})
        if prior is None:
            records.record_drift(ws, dataset_id, production["train_dataset_id"], core.digest(ws.cfg.drift.model_dump()),
                                 run_id, drift_report)
        summary["estimate"] = ((prior.summary or {}).get("estimate") if prior is not None  # stored the first time
                               else monitoring.after_scoring(ws, dataset_id, production, scores, run_id))
        metrics = stage("monitor", monitor, wsref, dataset_id, production, scores, bad_rows)
        if metrics and prior is None:
            records.record_metrics(ws, production["id"], dataset_id, "batch", metrics, run_id)
    else:
        for name in ("score", "drift", "monitor"):
            stage.skip(name, "no production model yet")
    summary["drift"] = _drift_summary(drift_report)
    summary["metrics"] = metrics

    n_drifted = len(summary["drift"]["drifted"]) if summary["drift"] else 0
    if prior is not None:  # a replay takes the decisions of the first run, so it changes nothing
        retrain, why = prior.model_version_id is not None, (prior.summary or {}).get("retrain_reasons", [])
    else:
        retrain, why = core.should_retrain(ws, production, ds["labelled_rows"] - len(bad_rows), n_drifted, metrics)
    records.record_stage(ws, run_id, "decide", "completed", False, 0.0, {"retrain": retrain, "reasons": why})
    summary.update(retrain=retrain, retrain_reasons=why, model_version=None)
    if not retrain:
        for name in ("train", "evaluate", "gate"):
            stage.skip(name, why[-1])
        summary.update(decision="kept" if production else "none", reasons=why)
        return _finish(ws, run_id, summary, production, "completed", prior)
    return _retrain(ws, wsref, stage, run_id, summary, production, dataset_id,
                    bool(drift_report and drift_report["detected"]), prior)


def _retrain(ws: Workspace, wsref: str, stage: _Stages, run_id: str, summary: dict[str, Any],
             production: dict[str, Any] | None, dataset_id: str, drifted: bool, prior: Any) -> dict[str, Any]:
    from keel.core.model.train import code_hash, model_params, params_hash

    rc = ws.cfg.retrain
    window = (prior.summary or {}).get("window") if prior is not None else core.training_window(ws, dataset_id)
    summary["window"] = window
    sets = stage("datasets", datasets, wsref, window, detail=lambda r: {**r, "window": window})
    params = model_params(rc.params, rc.seed)
    code = code_hash()
    model = stage("train", train, wsref, sets["train"], params, rc.num_boost_round, code,
                  detail=lambda r: {"sha256": r["sha256"]})
    _, dest = ws.artifacts.put_bytes(model["text"].encode(), ".txt")
    evaluation = stage("evaluate", evaluate, wsref, sets["holdout"], model, production, ws.cfg.gate.model_dump())
    mv = records.register_model(ws, {
        "model_name": ws.cfg.model, "train_dataset_id": sets["train"], "holdout_dataset_id": sets["holdout"],
        "params_hash": params_hash(params, rc.num_boost_round), "code_hash": code, "params": params,
        "features": model["features"], "categorical": model["categorical"], "categories": model["categories"],
        "num_boost_round": rc.num_boost_round, "importance": model["importance"], "positive": model["spec"]["positive"],
        "artifact_sha256": model["sha256"], "artifact_uri": str(dest), "run_id": run_id,
        "train_metrics": evaluation["candidate"], "contract": model["contract"], "spec": model["spec"],
    })
    records.record_metrics(ws, mv.id or 0, sets["holdout"], "holdout", evaluation["candidate"], run_id)
    if production is not None and "production" in evaluation:
        records.record_metrics(ws, production["id"], sets["holdout"], "holdout", evaluation["production"], run_id)
    start = time.perf_counter()
    decision = core.gate(ws, evaluation, drifted)
    records.record_stage(ws, run_id, "gate", "completed", False, (time.perf_counter() - start) * 1000, decision)
    summary.update(model_version=mv.version, decision=decision["outcome"], reasons=decision["reasons"],
                   evaluation=evaluation.get("comparison"), candidate_metrics=evaluation["candidate"])
    records.update_run(ws, run_id, model_version_id=mv.id)
    if prior is None:
        _apply(ws, mv.version, decision, evaluation, run_id)
    summary["decision"] = {"promote": "promoted", "reject": "rejected", "review": "review"}[decision["outcome"]]
    return _finish(ws, run_id, summary, production, "completed", prior)


def _apply(ws: Workspace, version: int, decision: dict[str, Any], evaluation: dict[str, Any], run_id: str) -> None:
    """Carry out the gate's decision through the registry (one audited transaction each).

    Only a fresh candidate is acted on: a run restarted after being killed finds its decision applied.
    """
    with ws.session() as session:
        if registry.get_version(session, ws.cfg.model, version).status != "candidate":
            return
    actor = f"{registry.current_actor()} (pipeline)"
    reason = "; ".join(decision["reasons"])[:2000]
    details = {"run_id": run_id, "policy_hash": decision["policy_hash"]}
    if decision["outcome"] == "promote":
        registry.promote(ws, ws.cfg.model, version, reason, actor=actor, action="promote:auto",
                         authorise=False, details=details)
    elif decision["outcome"] == "reject":
        registry.reject(ws, ws.cfg.model, version, reason, actor=actor, authorise=False, details=details)
    else:
        review = registry.open_review(ws, ws.cfg.model, version, decision["reasons"], evaluation.get("comparison"),
                                      run_id, actor=actor)
        if ws.cfg.review.wait:  # pause for the decision taken in keel; a timeout rejects
            from keel.flows.review_wait import wait_for_review

            wait_for_review(ws, version, review.id, run_id, decision)


def _drift_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    features = [{k: f.get(k) for k in ("name", "test", "statistic", "p_value", "p_corrected", "effect_size",
                                        "effect_metric", "drifted", "importance_rank")} for f in report["features"]]
    return {"detected": report["detected"], "drifted": [f["name"] for f in features if f["drifted"]],
            "features": features, "prediction": report.get("prediction"), "label": report.get("label"),
            "sampled": report.get("sampled")}


def _finish(ws: Workspace, run_id: str, summary: dict[str, Any], production: dict[str, Any] | None,
            status: str, prior: Any = None) -> dict[str, Any]:
    if prior is not None:
        summary.update(decision=prior.decision, replay_of=prior.id)
    with ws.session() as session:
        mv = registry.production_version(session, ws.cfg.model)
    summary.update(status=status, production_version=mv.version if mv else None,
                   production_before=production["version"] if production else None)
    summary = records.clean(summary)
    if prior is None:
        summary["alerts"] = records.clean(monitoring.after_run(ws, run_id, summary))
    records.finish_run(ws, run_id, status, decision=summary.get("decision"), reasons=summary.get("reasons"),
                       summary=summary, production_after=mv.id if mv else None)
    records.abandon_unfinished(ws, summary["dataset_version"], summary["batch"], run_id)
    return summary

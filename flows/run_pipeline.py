"""run_pipeline: one batch through ingest, validate, score, drift, monitor, decide, train, evaluate, register, gate.

The flow body is the list of stages. Tasks take content hashes, model references and the settings they
read, and are cached on those, their source and keel's code (keel.flows.caching), so a rerun of the same
batch is all cache hits and a changed setting reruns exactly the stages that read it. The logic lives in
keel.core.pipeline.stages; the bookkeeping (plan, writes, candidate, decision, summary) in
keel.core.pipeline.run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keel.flows.settings import configure_prefect

configure_prefect()  # before Prefect: a worker loads this file by path in a fresh interpreter

from prefect import Task, flow, get_run_logger, task
from prefect.context import get_run_context
from prefect.exceptions import Pause
from prefect.utilities.annotations import opaque

from keel.core.config import ContractConfig, DriftConfig
from keel.core.data.features import Columns
from keel.core.errors import KeelError, mask_secrets
from keel.core.faults import crash_point
from keel.core.pipeline import run as book
from keel.core.pipeline import stages as core
from keel.core.pipeline.code import pipeline_digest
from keel.core.store import records
from keel.core.workspace import Workspace
from keel.flows.caching import CACHED, with_result_storage
from keel.flows.locks import model_lock
from keel.flows.workspace import open_ref, workspace_ref


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O failures, never keel's own verdicts (a bad file stays bad)."""
    return not isinstance(state.result(raise_on_failure=False), KeelError)


IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15], "retry_jitter_factor": 0.5,
                              "retry_condition_fn": _transient}


# --- tasks: each receives everything it reads ------------------------------------------------------------


@task(name="ingest", **IO_RETRIES)
def ingest(wsref: str, path: str) -> dict[str, Any]:
    """Hash the batch, store its immutable copy, register the dataset version."""
    return core.ingest(open_ref(wsref), path)


@task(name="validate", cache_policy=CACHED, persist_result=True)
def validate(wsref: str, dataset_id: str, contract: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """Check the batch against the data contract under the [contract] limits."""
    return core.validate_batch(open_ref(wsref), dataset_id, contract, ContractConfig(**rules))


@task(name="score", cache_policy=CACHED, persist_result=True)
def score(wsref: str, dataset_id: str, model: dict[str, Any], bad: list[int]) -> Any:
    """Score the batch with the production model (keel.core.pipeline.stages.scorer)."""
    return core.score(open_ref(wsref), dataset_id, model, bad)


@task(name="drift", cache_policy=CACHED, persist_result=True)
def drift(wsref: str, reference_id: str, dataset_id: str, production: dict[str, Any], bad: list[int],
          settings: dict[str, Any], scores: Any) -> dict[str, Any]:
    """Drift of inputs, predictions and labels against the production model's training data, under [drift]."""
    ws = open_ref(wsref)
    holdout = production.get("holdout_dataset_id")
    ref_scores = core.score(ws, holdout, production, []) if holdout else None
    return core.drift(ws, reference_id, dataset_id, production, bad, DriftConfig(**settings), ref_scores, scores)


@task(name="monitor", cache_policy=CACHED, persist_result=True)
def monitor(wsref: str, dataset_id: str, production: dict[str, Any], scores: Any, bad: list[int],
            threshold: float) -> dict[str, Any] | None:
    """Production metrics on the labelled batch at the [monitor] threshold."""
    return core.monitor(open_ref(wsref), dataset_id, production, scores, bad, threshold)


@task(name="datasets", **IO_RETRIES)
def datasets(wsref: str, window: list[str]) -> dict[str, Any]:
    """Build and register the training set and the holdout from the window."""
    return core.make_training_sets(open_ref(wsref), window)


@task(name="train", cache_policy=CACHED, persist_result=True)
def train(wsref: str, train_id: str, columns: dict[str, Any], params: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Train a LightGBM candidate on the training set, with keel.toml's column roles and [retrain] params."""
    return core.train(open_ref(wsref), train_id, Columns(**columns), params, rounds)


@task(name="evaluate", cache_policy=CACHED, persist_result=True)
def evaluate(wsref: str, holdout_id: str, candidate: dict[str, Any], production: dict[str, Any] | None,
             threshold: float, alpha: float, n_boot: int) -> dict[str, Any]:
    """Candidate and production on the same holdout, compared at the [gate] alpha."""
    return core.evaluate(open_ref(wsref), holdout_id, candidate, production, threshold, alpha, n_boot)


# --- the stage recorder -------------------------------------------------------------------------------------


class Stages:
    """Runs a stage (a task or a plain function) and records it as a stage_run row: status, time, cache outcome
    and a short detail."""

    def __init__(self, ws: Workspace, run_id: str) -> None:
        self.ws, self.run_id = ws, run_id

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any,
                 detail: Callable[[Any], Any] | None = None) -> Any:
        start = time.perf_counter()
        cached = False
        crash_point(f"{name}:start")
        try:
            if isinstance(fn, Task):  # opaque: Prefect links a task's result to the next task, never walks inside
                state = with_result_storage(fn, self.ws.settings)(*map(opaque, args), return_state=True)
                cached = state.name == "Cached"
                result = state.result()
            else:
                result = fn(*args)
        except BaseException as exc:
            records.record_stage(self.ws, self.run_id, name, "failed", False, self._ms(start),
                                 {"error": mask_secrets(str(exc))[:2000] or type(exc).__name__})
            raise
        crash_point(f"{name}:done")  # the stage's work is done, its row not yet written
        records.record_stage(self.ws, self.run_id, name, "completed", cached, self._ms(start),
                             detail(result) if detail else None)
        return result

    def skip(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            records.record_stage(self.ws, self.run_id, name, "skipped", False, 0.0, {"reason": why})

    @staticmethod
    def _ms(start: float) -> float:
        return (time.perf_counter() - start) * 1000


def _flow_run_id() -> str | None:
    try:
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    except Exception:  # pragma: no cover - outside a flow run
        return None


# --- the flow -----------------------------------------------------------------------------------------------


@flow(name="run_pipeline", log_prints=False, validate_parameters=False)
def run_pipeline(batch: str, config: str = "keel.toml", home: str | None = None) -> dict[str, Any]:
    """Take one batch through the whole pipeline; returns the run summary (keel.core.pipeline.run.RunSummary)."""
    wsref = workspace_ref(config, home)
    ws = open_ref(wsref)
    run = book.RunSummary(records.start_run(ws, str(batch), _flow_run_id(), code_hash=pipeline_digest()),
                          ws.cfg.model, str(batch))
    try:
        return _stages(ws, wsref, run)
    except Pause:  # suspended for a review: the run waits (its row says so); no failure, no alert
        raise
    except BaseException as exc:
        if problem := book.fail(ws, run, exc):
            get_run_logger().error("alerting on the failed run failed too: %s", problem)
        raise


def _stages(ws: Workspace, wsref: str, run: book.RunSummary) -> dict[str, Any]:
    cfg, stage = ws.cfg, Stages(ws, run.run_id)
    columns = Columns.of(cfg).to_dict()

    ds = stage("ingest", ingest, wsref, run.batch, detail=lambda r: {"dataset_id": r["id"], "rows": r["rows"]})
    run.dataset_version, run.rows, run.labelled_rows = ds["id"], ds["rows"], ds["labelled_rows"]
    plan = book.plan_run(ws, run.run_id, ds["id"])  # fresh, restarted or replay: decided once
    writes = book.writes_for(ws, run.run_id, plan)  # a replay's writes write nothing
    production = plan.production
    crash_point("plan:made")
    if production is not None:  # the estimate's calibration fits beside validation, scoring and drift
        writes.prepare_estimate(ds["id"], production)

    contract = core.contract_for(core.load_dataset(ws, ds["id"]), production, cfg, cfg.contract)
    checked = stage("validate", validate, wsref, ds["id"], contract, cfg.contract.model_dump(),
                    detail=lambda r: {k: v for k, v in r.items() if k != "bad"})
    writes.quarantine(ds["id"], checked, cfg.id)
    crash_point("quarantine:written")
    bad = sorted({i for i, _ in checked["bad"]})
    run.quarantined_rows = len(bad)
    if checked["batch_reason"]:
        run.decision, run.reasons = "quarantined", [checked["batch_reason"]]
        return book.finish(ws, run, plan, writes, "quarantined")

    if production is not None:
        scores = stage("score", score, wsref, ds["id"], core.scorer(production), bad)
        writes.predictions(ds["id"], production, bad, scores, cfg.monitor.threshold)
        crash_point("predictions:written")
        report = stage("drift", drift, wsref, production["train_dataset_id"], ds["id"], core.drift_ref(production), bad,
                       cfg.drift.model_dump(), scores,
                       detail=lambda r: {"detected": r["detected"], "drifted": r.get("drifted")})
        writes.drift(ds["id"], production["train_dataset_id"], cfg.drift.model_dump(), report)
        crash_point("drift:written")
        run.drift = book.drift_summary(report)
        run.estimate = writes.estimate(ds["id"], production, scores)
        crash_point("estimate:written")
        run.metrics = stage("monitor", monitor, wsref, ds["id"], production, scores, bad, cfg.monitor.threshold)
        writes.metrics(production, ds["id"], run.metrics)
        crash_point("metrics:written")
    else:
        stage.skip(("score", "drift", "monitor"), "no production model yet")

    with model_lock(cfg.model):  # one model's decide-train-gate, one run at a time across workers
        return _decide_and_retrain(ws, wsref, run, plan, writes, stage, columns)


def _decide_and_retrain(ws: Workspace, wsref: str, run: book.RunSummary, plan: book.Plan, writes: book.Writes,
                        stage: Stages, columns: dict[str, Any]) -> dict[str, Any]:
    cfg, production, ds = ws.cfg, plan.production, {"id": run.dataset_version, "labelled_rows": run.labelled_rows}
    bad_count = run.quarantined_rows
    n_drifted = len(run.drift["drifted"]) if run.drift else 0
    if plan.replay:  # a replay takes the first run's decision, so it changes nothing
        prior = plan.prior_summary()
        retrain, why = prior.get("retrain", plan.prior.model_version_id is not None), prior.get(  # type: ignore[union-attr]
            "retrain_reasons", [])
        stage("decide", lambda: {"retrain": retrain, "reasons": why}, detail=lambda r: r)
    else:
        retrain, why = stage("decide", core.should_retrain, ws, production, ds["labelled_rows"] - bad_count,
                             n_drifted, run.metrics, detail=lambda r: {"retrain": r[0], "reasons": r[1]})
    run.retrain, run.retrain_reasons = retrain, why
    if not retrain:
        stage.skip(("train", "evaluate", "register", "gate"), why[-1])
        run.decision, run.reasons = ("kept" if production else "none"), why
        return book.finish(ws, run, plan, writes, "completed")

    if not plan.replay:  # the training process starts now and imports LightGBM while the training set is built
        from keel.core.model.fit import warm_up

        warm_up()
    run.window = plan.prior_summary().get("window") or core.training_window(ws, ds["id"])
    sets = stage("datasets", datasets, wsref, run.window, detail=lambda r: {**r, "window": run.window})
    params, rounds = _params(cfg.retrain.params, cfg.retrain.seed), cfg.retrain.num_boost_round
    model = stage("train", train, wsref, sets["train"], columns, params, rounds,
                  detail=lambda r: {"sha256": r["sha256"]})
    evaluation = stage("evaluate", evaluate, wsref, sets["holdout"], model, production, cfg.monitor.threshold,
                       cfg.gate.alpha, cfg.gate.n_boot)
    # its own stage: storing the model file is the write a full or read-only artifact store fails
    candidate = stage("register", book.register_candidate, ws, run.run_id, sets, model, params, rounds, columns,
                      evaluation, production, detail=lambda mv: {"version": mv.version, "sha256": mv.artifact_sha256})
    decision = stage("gate", core.gate, evaluation, bool(run.drift and run.drift["detected"]), cfg.gate,
                     detail=lambda r: r)
    run.model_version, run.evaluation, run.candidate_metrics = (candidate.version, evaluation.get("comparison"),
                                                                evaluation["candidate"])
    writes.decision(candidate, decision, evaluation)
    crash_point("decision:applied")
    if decision["outcome"] == "review" and cfg.review.wait and not plan.replay:  # the decision taken in keel
        from keel.flows.review_wait import wait_for_review

        wait_for_review(ws, candidate.version, run.run_id, decision)
    run.decision, run.reasons = book.DECISION_WORDS[decision["outcome"]], decision["reasons"]
    return book.finish(ws, run, plan, writes, "completed")


def _params(overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    from keel.core.model.train import model_params

    return model_params(overrides, seed)

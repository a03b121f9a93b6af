"""One pipeline run's bookkeeping around its stages: the plan, the store writes, the candidate, the decision.

The flow (keel.flows.run_pipeline) is the list of stages; this module is what it records. A run of a
batch that already completed under the same configuration is a *replay*: it reruns its (cached) stages
and takes the first run's plan, and its writes are those of :class:`ReplayWrites`, which write nothing.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from keel.core.errors import mask_secrets
from keel.core.faults import crash_point
from keel.core.jsonsafe import json_safe
from keel.core.pipeline import stages
from keel.core.registry import transactions as registry
from keel.core.store import records
from keel.core.store.engine import unit_of_work
from keel.core.store.models import ModelVersion, PipelineRun, Review
from keel.core.workspace import Workspace

DECISION_WORDS = {"promote": "promoted", "reject": "rejected", "review": "review"}


@dataclass
class RunSummary:
    """What a pipeline run did: `keel run --json` prints it and the run's row keeps it."""

    run_id: str
    model: str
    batch: str
    status: str = "running"  # completed | quarantined | failed
    dataset_version: str | None = None
    rows: int | None = None
    labelled_rows: int | None = None
    quarantined_rows: int = 0
    drift: dict[str, Any] | None = None  # detected, drifted, features, prediction, label, sampled
    metrics: dict[str, Any] | None = None  # production on this batch, when labelled
    estimate: dict[str, Any] | None = None  # the label-free estimate, when production exists
    retrain: bool = False
    retrain_reasons: list[str] = field(default_factory=list)
    window: list[str] | None = None  # the batches the candidate trained on
    model_version: int | None = None  # the candidate, when one was trained
    decision: str | None = None  # promoted | rejected | review | kept | none | quarantined
    reasons: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None  # the paired comparison with production
    candidate_metrics: dict[str, Any] | None = None
    production_before: int | None = None
    production_version: int | None = None
    replay_of: str | None = None
    alerts: list[dict[str, Any]] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def drift_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The drift report as the summary shows it: per feature, the test, effect size and verdict."""
    if report is None:
        return None
    features = [{k: f.get(k) for k in ("name", "test", "statistic", "p_value", "p_corrected", "effect_size",
                                        "effect_metric", "drifted", "importance_rank")} for f in report["features"]]
    return {"detected": report["detected"], "drifted": [f["name"] for f in features if f["drifted"]],
            "features": features, "prediction": report.get("prediction"), "label": report.get("label"),
            "sampled": report.get("sampled")}


# --- the plan: made once, when the batch is known ----------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the run is judged against. A restarted run (the first one was killed) and a replay judge the
    batch against the production of their first run; a replay also takes its retrain decision and window."""

    production: dict[str, Any] | None
    prior: PipelineRun | None = None  # the completed run this one replays

    @property
    def replay(self) -> bool:
        return self.prior is not None

    def prior_summary(self) -> dict[str, Any]:
        return (self.prior.summary or {}) if self.prior is not None else {}


@unit_of_work
def plan_run(ws: Workspace, run_id: str, dataset_id: str) -> Plan:
    """Fresh, resumed, restarted or replay: decided here, once, and written on the run's row."""
    prior = records.completed_run(ws, dataset_id)
    with ws.session() as session:
        own = session.get(PipelineRun, run_id)
        resumed = own is not None and own.batch_id == dataset_id  # planned before, then suspended and resumed
    killed = records.unfinished_run(ws, dataset_id, run_id) if prior is None and not resumed else None
    if killed is not None:
        records.take_over_checks(ws, dataset_id, run_id)
    first = prior or (own if resumed else None) or killed  # judged against the production it was judged against
    if first is not None:
        production = stages.version_ref(ws, first.production_before)
    else:
        with ws.session() as session:
            mv = registry.production_version(session, ws.cfg.model)
            production = stages.model_ref(mv) if mv else None
    records.update_run(ws, run_id, batch_id=dataset_id, production_before=production["id"] if production else None,
                       replay_of=prior.id if prior else None)
    return Plan(production, prior)


# --- writes: a fresh run's, and a replay's (none) -------------------------------------------------------


class Writes:
    """What a run adds to the store beyond its stages. Each write is keyed by a natural key."""

    def __init__(self, ws: Workspace, run_id: str) -> None:
        self.ws, self.run_id = ws, run_id
        self._calibration: Future[Any] | None = None

    def prepare_estimate(self, dataset_id: str, production: dict[str, Any]) -> None:
        """Start the label-free estimate's calibration now, in the background (it reads only earlier runs' rows)."""
        from keel.core.monitoring import hooks as monitoring

        self._calibration = monitoring.start_calibration(self.ws, production, dataset_id, self.run_id)

    def quarantine(self, dataset_id: str, checked: dict[str, Any], id_column: str | None) -> None:
        frame = stages.load_dataset(self.ws, dataset_id)
        ids = frame[id_column].cast(str).to_list() if id_column and id_column in frame.columns else None
        records.record_quarantine(self.ws, dataset_id, checked["bad"], ids, checked["batch_reason"])

    def predictions(self, dataset_id: str, production: dict[str, Any], bad: list[int], scores: np.ndarray,
                    threshold: float) -> None:
        ids, actual = stages.batch_ids(self.ws, dataset_id, bad, stages.spec_of(production))
        records.record_predictions(self.ws, dataset_id, production["id"], ids, scores, actual, threshold, self.run_id)

    def drift(self, dataset_id: str, reference_id: str, settings: dict[str, Any], report: dict[str, Any]) -> None:
        records.record_drift(self.ws, dataset_id, reference_id, stages.digest(settings), self.run_id, report)

    def estimate(self, dataset_id: str, production: dict[str, Any], scores: np.ndarray) -> dict[str, Any] | None:
        from keel.core.monitoring import hooks as monitoring  # scipy's stats: not for a replay from the store

        calibration, self._calibration = self._calibration, None
        return monitoring.after_scoring(self.ws, dataset_id, production, scores, self.run_id, calibration)

    def metrics(self, production: dict[str, Any], dataset_id: str, metrics: dict[str, Any] | None) -> None:
        if metrics:
            records.record_metrics(self.ws, production["id"], dataset_id, "batch", metrics, self.run_id)

    def decision(self, candidate: ModelVersion, decision: dict[str, Any], evaluation: dict[str, Any]) -> Review | None:
        return apply_decision(self.ws, candidate.version, decision, evaluation, self.run_id)

    def alerts(self, summary: RunSummary) -> list[dict[str, Any]] | None:
        from keel.core.monitoring import hooks as monitoring

        return json_safe(monitoring.after_run(self.ws, self.run_id, summary.to_dict()))


class ReplayWrites(Writes):
    """A replay's writes: none. Its first run stored the quarantine, predictions, drift report, metrics,
    estimate, decision and alerts; the replay returns what the first run recorded where the summary needs it."""

    def __init__(self, ws: Workspace, run_id: str, prior: PipelineRun) -> None:
        super().__init__(ws, run_id)
        self.prior = prior

    def prepare_estimate(self, dataset_id: str, production: dict[str, Any]) -> None:
        return None

    def quarantine(self, dataset_id: str, checked: dict[str, Any], id_column: str | None) -> None:
        return None

    def predictions(self, dataset_id: str, production: dict[str, Any], bad: list[int], scores: np.ndarray,
                    threshold: float) -> None:
        return None

    def drift(self, dataset_id: str, reference_id: str, settings: dict[str, Any], report: dict[str, Any]) -> None:
        return None

    def estimate(self, dataset_id: str, production: dict[str, Any], scores: np.ndarray) -> dict[str, Any] | None:
        return (self.prior.summary or {}).get("estimate")

    def metrics(self, production: dict[str, Any], dataset_id: str, metrics: dict[str, Any] | None) -> None:
        return None

    def decision(self, candidate: ModelVersion, decision: dict[str, Any], evaluation: dict[str, Any]) -> Review | None:
        return None

    def alerts(self, summary: RunSummary) -> list[dict[str, Any]] | None:
        return None


def writes_for(ws: Workspace, run_id: str, plan: Plan) -> Writes:
    return ReplayWrites(ws, run_id, plan.prior) if plan.prior is not None else Writes(ws, run_id)


# --- the candidate and the gate's decision --------------------------------------------------------------


def training_hash(params: dict[str, Any], rounds: int, columns: dict[str, Any]) -> str:
    """What a training set was trained with: LightGBM's parameters, the rounds, and which columns are what."""
    blob = json.dumps({"params": params, "rounds": rounds, "columns": columns}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def register_candidate(ws: Workspace, run_id: str, sets: dict[str, str], model: dict[str, Any],
                       params: dict[str, Any], rounds: int, columns: dict[str, Any],
                       evaluation: dict[str, Any], production: dict[str, Any] | None) -> ModelVersion:
    """Store the trained model's artifact and register it as a candidate version, with its holdout metrics
    (and production's on the same rows). The natural key (training set, training hash, code) makes this
    idempotent: a rerun finds the version instead of adding one."""
    from keel.core.model.train import code_hash

    _, dest = ws.artifacts.put_bytes(model["text"].encode(), ".txt")
    crash_point("candidate:stored")
    mv = records.register_model(ws, {
        "model_name": ws.cfg.model, "train_dataset_id": sets["train"], "holdout_dataset_id": sets["holdout"],
        "params_hash": training_hash(params, rounds, columns), "code_hash": code_hash(), "params": params,
        "features": model["features"], "categorical": model["categorical"], "categories": model["categories"],
        "num_boost_round": rounds, "importance": model["importance"], "positive": model["spec"]["positive"],
        "artifact_sha256": model["sha256"], "artifact_uri": str(dest), "run_id": run_id,
        "train_metrics": evaluation["candidate"], "contract": model["contract"], "spec": model["spec"],
    })
    crash_point("candidate:registered")
    records.record_metrics(ws, mv.id or 0, sets["holdout"], "holdout", evaluation["candidate"], run_id)
    if production is not None and "production" in evaluation:
        records.record_metrics(ws, production["id"], sets["holdout"], "holdout", evaluation["production"], run_id)
    crash_point("candidate:measured")
    records.update_run(ws, run_id, model_version_id=mv.id)
    return mv


@unit_of_work
def apply_decision(ws: Workspace, version: int, decision: dict[str, Any], evaluation: dict[str, Any],
                   run_id: str) -> Review | None:
    """Carry out the gate's decision through the registry (one audited transaction each); returns the review
    opened for a flagged candidate. Only a fresh candidate is acted on: a run restarted after being killed
    finds its decision applied."""
    with ws.session() as session:
        if registry.get_version(session, ws.cfg.model, version).status != "candidate":
            return None
    actor = f"{registry.current_actor()} (pipeline)"
    reason = "; ".join(decision["reasons"])[:2000]
    details = {"run_id": run_id, "policy_hash": decision["policy_hash"]}
    if decision["outcome"] == "promote":
        registry.promote(ws, ws.cfg.model, version, reason, actor=actor, action="promote:auto",
                         authorise=False, details=details)
        return None
    if decision["outcome"] == "reject":
        registry.reject(ws, ws.cfg.model, version, reason, actor=actor, authorise=False, details=details)
        return None
    return registry.open_review(ws, ws.cfg.model, version, decision["reasons"], evaluation.get("comparison"),
                                run_id, actor=actor)


# --- the end of a run ------------------------------------------------------------------------------------


@unit_of_work
def finish(ws: Workspace, summary: RunSummary, plan: Plan, writes: Writes, status: str) -> dict[str, Any]:
    """Close the run: production after it, its alerts (a fresh run's only), the summary on its row."""
    if plan.prior is not None:
        summary.decision, summary.replay_of = plan.prior.decision, plan.prior.id
    with ws.session() as session:
        mv = registry.production_version(session, ws.cfg.model)
    summary.status = status
    summary.production_version = mv.version if mv else None
    summary.production_before = plan.production["version"] if plan.production else None
    summary.alerts = writes.alerts(summary)
    crash_point("alerts:sent")
    out = summary.to_dict()
    records.finish_run(ws, summary.run_id, status, decision=summary.decision, reasons=summary.reasons,
                       summary=out, production_after=mv.id if mv else None)
    crash_point("run:closed")
    records.abandon_unfinished(ws, summary.dataset_version or "", summary.batch, summary.run_id)
    return out


def fail(ws: Workspace, summary: RunSummary, error: BaseException) -> str | None:
    """Record the run as failed and fire the failure rule; returns why alerting failed too, if it did."""
    from keel.core.monitoring import hooks as monitoring

    message = mask_secrets(str(error))[:2000] or type(error).__name__
    records.finish_run(ws, summary.run_id, "failed", error=message)
    try:
        monitoring.after_run(ws, summary.run_id, {"run_id": summary.run_id, "status": "failed", "error": message,
                                                  "model": summary.model, "batch": summary.batch})
    except Exception as exc:  # the run's own error is the one to report
        return mask_secrets(str(exc))
    return None

"""The store's tables: datasets, runs, models, aliases, reviews, audit, metrics, drift, predictions.

Natural keys carry idempotency: a rerun finds its row through a unique constraint instead of
writing a second one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(JSON, **kw))


class DatasetVersion(SQLModel, table=True):
    """An immutable, content-addressed snapshot of a batch or a derived set."""

    __tablename__ = "dataset_version"
    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of the content")
    kind: str = Field(max_length=16, description="batch | train | holdout")
    source: str | None = Field(default=None, description="original file for a batch")
    format: str = Field(max_length=16)
    rows: int
    labelled_rows: int = 0
    columns: list[str] | None = _json()
    artifact_uri: str
    data_from: datetime | None = Field(default=None, description="earliest value of keel.toml's timestamp column")
    data_to: datetime | None = Field(default=None, description="latest value of keel.toml's timestamp column")
    created_at: datetime = Field(default_factory=utcnow)


class DatasetLineage(SQLModel, table=True):
    """parent -> child edges between dataset versions."""

    __tablename__ = "dataset_lineage"
    parent_id: str = Field(primary_key=True, foreign_key="dataset_version.id", max_length=64)
    child_id: str = Field(primary_key=True, foreign_key="dataset_version.id", max_length=64)


class PipelineRun(SQLModel, table=True):
    """One execution of a flow."""

    __tablename__ = "pipeline_run"
    __table_args__ = (Index("ix_pipeline_run_started", "started_at"),)
    id: str = Field(primary_key=True, max_length=36)
    flow_run_id: str | None = Field(default=None, max_length=36)
    flow: str = Field(default="run_pipeline", max_length=64)
    model_name: str = Field(index=True, max_length=200)
    batch_id: str | None = Field(default=None, max_length=64, index=True)
    source: str | None = None
    status: str = Field(default="running", max_length=16)
    decision: str | None = Field(default=None, max_length=16)
    reasons: list[str] | None = _json()
    summary: dict[str, Any] | None = _json()
    error: str | None = None
    config_hash: str | None = Field(default=None, max_length=32)
    code_hash: str | None = Field(default=None, max_length=64)  # keel.core.pipeline.code.pipeline_digest
    replay_of: str | None = Field(default=None, max_length=36)
    production_before: int | None = None
    production_after: int | None = None
    model_version_id: int | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class StageRun(SQLModel, table=True):
    """One stage of a run, with timing and cache outcome."""

    __tablename__ = "stage_run"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="pipeline_run.id", index=True, max_length=36)
    name: str = Field(max_length=32)
    status: str = Field(max_length=16, description="completed | skipped | failed")
    cached: bool = False
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: float = 0.0
    detail: dict[str, Any] | None = _json()


class ModelVersion(SQLModel, table=True):
    """A trained model, addressed by what it was trained on and how."""

    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("model_name", "version"),
        UniqueConstraint("model_name", "train_dataset_id", "params_hash", "code_hash"),
    )
    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(index=True, max_length=200)
    version: int
    status: str = Field(default="candidate", max_length=16, description="candidate | production | archived | rejected | review")
    train_dataset_id: str = Field(foreign_key="dataset_version.id", max_length=64)
    holdout_dataset_id: str | None = Field(default=None, foreign_key="dataset_version.id", max_length=64)
    params_hash: str = Field(max_length=64)
    code_hash: str = Field(max_length=64)
    params: dict[str, Any] | None = _json()
    features: list[str] | None = _json()
    categorical: list[str] | None = _json()
    categories: dict[str, Any] | None = _json()
    num_boost_round: int = 0
    importance: dict[str, float] | None = _json()
    positive: str | None = None
    artifact_sha256: str = Field(max_length=64)
    artifact_uri: str
    run_id: str | None = Field(default=None, max_length=36)
    train_metrics: dict[str, Any] | None = _json()
    contract: dict[str, Any] | None = _json()
    spec: dict[str, Any] | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class Alias(SQLModel, table=True):
    """A named pointer to a model version, e.g. production."""

    __tablename__ = "alias"
    model_name: str = Field(primary_key=True, max_length=200)
    alias: str = Field(primary_key=True, max_length=32)
    model_version_id: int = Field(foreign_key="model_version.id")
    previous_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    revision: int = Field(default=1, description="bumped on every change; optimistic lock")
    updated_at: datetime = Field(default_factory=utcnow)


class Review(SQLModel, table=True):
    """A pending or finished human decision on a candidate."""

    __tablename__ = "review"
    __table_args__ = (UniqueConstraint("candidate_version_id"),)
    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(index=True, max_length=200)
    candidate_version_id: int = Field(foreign_key="model_version.id")
    production_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    run_id: str | None = Field(default=None, max_length=36)
    status: str = Field(default="open", max_length=16, description="open | approved | rejected | expired")
    reasons: list[str] | None = _json()
    comparison: dict[str, Any] | None = _json()
    required_approvals: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None


class ReviewDecision(SQLModel, table=True):
    """One operator's vote on a review."""

    __tablename__ = "review_decision"
    __table_args__ = (UniqueConstraint("review_id", "actor"),)
    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    actor: str = Field(max_length=200)
    decision: str = Field(max_length=16)
    reason: str
    at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained record of every state change and refusal."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=32)
    model_name: str | None = Field(default=None, max_length=200, index=True)
    version: int | None = None
    reason: str | None = None
    details: dict[str, Any] | None = _json()
    prev_hash: str = Field(max_length=64, unique=True, description="one successor per event: no forks")
    hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    """The audit chain's head: count and newest hash, moved in the same transaction as each event.

    Lets `keel audit verify` notice the removal of the newest events, which the chain alone cannot.
    """

    __tablename__ = "audit_head"
    id: int = Field(default=1, primary_key=True)
    count: int = 0
    hash: str = Field(max_length=64)
    event_id: int | None = None


class RegistryCommit(SQLModel, table=True):
    """One row per registry transaction, written in it: a try whose commit reached the store but whose reply was
    lost (a dropped connection) is recognised when the transaction is tried again, and not done twice."""

    __tablename__ = "registry_commit"
    token: str = Field(primary_key=True, max_length=32)
    at: datetime = Field(default_factory=utcnow)


class MetricPoint(SQLModel, table=True):
    """One metric value: which model, on which data, in which run, against which thresholds."""

    __tablename__ = "metric_point"
    __table_args__ = (
        UniqueConstraint("model_version_id", "dataset_id", "scope", "name"),
        Index("ix_metric_point_model_name", "model_name", "name"),
        Index("ix_metric_point_run_id", "run_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=200)
    model_version_id: int = Field(foreign_key="model_version.id")  # led by the unique key: no index of its own
    dataset_id: str = Field(max_length=64)
    run_id: str | None = Field(default=None, max_length=36)
    scope: str = Field(max_length=32, description="batch | holdout | train | estimate")
    name: str = Field(max_length=64)
    value: float | None = None
    lower: float | None = None
    upper: float | None = None
    alert: bool = False
    at: datetime = Field(default_factory=utcnow)
    batch_time: datetime | None = Field(default=None, description="the dataset's latest timestamp: when its data is from")


class DriftReport(SQLModel, table=True):
    """A drift check of one dataset against a reference."""

    __tablename__ = "drift_report"
    __table_args__ = (UniqueConstraint("dataset_id", "reference_id", "settings_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: str = Field(max_length=64, index=True)
    reference_id: str = Field(max_length=64)
    settings_hash: str = Field(max_length=32)
    run_id: str | None = Field(default=None, max_length=36)
    engine: str = Field(max_length=16)
    detected: bool
    n_drifted: int
    summary: dict[str, Any] | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class FeatureDrift(SQLModel, table=True):
    """One feature's drift test within a report."""

    __tablename__ = "feature_drift"
    __table_args__ = (UniqueConstraint("report_id", "feature"),)
    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(foreign_key="drift_report.id", index=True)
    feature: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    test: str = Field(max_length=16)
    statistic: float | None = None
    p_value: float | None = None
    p_corrected: float | None = None
    effect_size: float | None = None
    effect_metric: str | None = Field(default=None, max_length=32)
    drifted: bool = False
    importance_rank: int | None = None
    detail: dict[str, Any] | None = _json()


class PredictionSet(SQLModel, table=True):
    """One model version's predictions for one dataset version, and the run that scored them."""

    __tablename__ = "prediction_set"
    __table_args__ = (UniqueConstraint("dataset_id", "model_version_id"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: str = Field(max_length=64)
    model_version_id: int = Field(foreign_key="model_version.id")
    run_id: str | None = Field(default=None, max_length=36)


class Prediction(SQLModel, table=True):
    """A model's prediction for one row of its set's dataset version. The set holds what every row of it shares
    (dataset, model version, run), so a row is its key, its score and its labels; on SQLite the table is its own
    key's B-tree (WITHOUT ROWID): a batch's rows are one insert into one tree, not two."""

    __tablename__ = "prediction"
    __table_args__ = {"sqlite_with_rowid": False}
    set_id: int = Field(primary_key=True, foreign_key="prediction_set.id")
    row_id: str = Field(primary_key=True, max_length=200)
    score: float
    label: int | None = None
    actual: int | None = None


class Alert(SQLModel, table=True):
    """A fired alert, with delivery and acknowledgement."""

    __tablename__ = "alert"
    __table_args__ = (UniqueConstraint("rule", "model_name", "dataset_id"),)
    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(max_length=32)
    model_name: str = Field(max_length=200)
    dataset_id: str | None = Field(default=None, max_length=64)
    run_id: str | None = Field(default=None, max_length=36)
    severity: str = Field(default="warning", max_length=16)
    message: str
    delivered: bool = False
    delivery_error: str | None = Field(default=None, description="why delivery failed, when it did")
    details: dict[str, Any] | None = _json()
    acked_by: str | None = None
    acked_at: datetime | None = None
    ack_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class AlertCheck(SQLModel, table=True):
    """One evaluation of one alert rule on one run: the history that k-of-n and cool-down count over."""

    __tablename__ = "alert_check"
    __table_args__ = (UniqueConstraint("rule", "model_name", "run_id"),
                      Index("ix_alert_check_rule_model", "rule", "model_name"))
    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(max_length=32)
    model_name: str = Field(max_length=200)
    run_id: str = Field(max_length=36)
    dataset_id: str | None = Field(default=None, max_length=64)
    breached: bool = False
    fired: bool = False
    value: float | None = None
    detail: str | None = None
    at: datetime = Field(default_factory=utcnow)


class Quarantine(SQLModel, table=True):
    """A batch or row that failed the data contract, with its reason; replayable."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("dataset_id", "row_index", "reason"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: str = Field(max_length=64, index=True)
    row_index: int = Field(description="-1 for the whole batch")
    row_id: str | None = None
    reason: str
    whole_batch: bool = False
    replayed: bool = False
    created_at: datetime = Field(default_factory=utcnow)

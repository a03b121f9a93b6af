"""keel's configuration: environment settings (KEEL_*) and the per-project keel.toml.

Every key has a documented default; unknown keys and bad values raise ConfigError naming the key.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.core.errors import ConfigError


class Settings(BaseSettings):
    """Where keel keeps its state; read from the environment (prefix KEEL_)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    home: Path = Field(default=Path(".keel"), description="state folder (store, artifacts, Prefect)")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite")
    artifacts_url: str | None = Field(default=None, description="artifact store: a folder, file:// or any fsspec URL "
                                      "(s3://bucket/prefix); default HOME/artifacts")
    artifacts_options: str | None = Field(default=None, description="JSON object of fsspec storage options for a "
                                          "remote artifacts_url (endpoint, region; never credentials)")
    store_retries: int = Field(default=6, ge=0, description="times a unit of store work is tried again, with "
                               "backoff (0.5 s doubling to 8 s, about 24 s in all), after a dropped connection or "
                               "a locked store; 0 never tries again")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:  # a bad KEEL_ variable: one line naming it
            err = exc.errors()[0]
            name = f"KEEL_{str(err['loc'][0]).upper()}" if err["loc"] else "a KEEL_ setting"
            raise ConfigError(f"bad value for {name}: {err['msg']}") from None

    @property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'keel.db'}"

    @property
    def artifacts_remote(self) -> bool:
        """Whether the artifact store is object storage (any fsspec URL but file://), shared between machines."""
        return bool(self.artifacts_url) and is_remote(self.artifacts_url or "")

    @property
    def artifacts_root(self) -> str:
        """Where the artifact store is, as text: its URL when remote, else its local folder."""
        if self.artifacts_remote:
            return (self.artifacts_url or "").rstrip("/")
        return str(self.artifacts_path)

    @property
    def artifacts_path(self) -> Path:
        """The local artifact folder (a remote store has none: see artifacts_root)."""
        if self.artifacts_remote:
            raise ConfigError(f"KEEL_ARTIFACTS_URL {self.artifacts_url} is not a local folder")
        if self.artifacts_url:
            url = self.artifacts_url
            return Path(url[len("file://") :] if url.startswith("file://") else url).expanduser()
        return self.home_path / "artifacts"

    @property
    def artifacts_storage_options(self) -> dict[str, Any]:
        """KEEL_ARTIFACTS_OPTIONS as fsspec storage options. Credentials are refused: the options also configure
        Prefect's result storage, which keeps them in its database; they come from the environment instead."""
        if not self.artifacts_options:
            return {}
        try:
            options = json.loads(self.artifacts_options)
        except ValueError as exc:
            raise ConfigError(f"KEEL_ARTIFACTS_OPTIONS is not JSON ({exc})") from exc
        if not isinstance(options, dict):
            raise ConfigError("KEEL_ARTIFACTS_OPTIONS must be a JSON object of fsspec storage options")
        if secret := _secret_key(options):
            raise ConfigError(f"KEEL_ARTIFACTS_OPTIONS must not hold credentials ('{secret}'): set them in the "
                              "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
        return options


_SECRET_OPTIONS = frozenset({
    "key", "secret", "token", "password", "passwd", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "session_token", "account_key", "sas_token", "client_secret", "connection_string",
    "credentials", "token_secret",
})


def _secret_key(options: dict[str, Any]) -> str | None:
    """The first option (at any depth) that names a credential, or None."""
    for name, value in options.items():
        if str(name).lower() in _SECRET_OPTIONS:
            return str(name)
        if isinstance(value, dict) and (inner := _secret_key(value)):
            return inner
    return None


def is_remote(url: str) -> bool:
    """Whether ``url`` names object storage or another remote file system (any fsspec URL but a file:// one)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() not in ("file", "local")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContractConfig(_Section):
    """[contract]: the data contract and quarantine."""

    max_bad_share: float = Field(0.05, ge=0.0, le=1.0, description="bad-row share that quarantines the batch")
    ranges: dict[str, list[float]] = Field(default_factory=dict, description="declared [min, max] per numeric column; rows outside are quarantined")
    max_null_increase: float = Field(0.3, ge=0.0, le=1.0, description="rise of a column's null share over the reference's that rejects the batch")
    categories: dict[str, list[str]] = Field(default_factory=dict, description="declared set of values per column; rows with another value are quarantined")

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for column, allowed in value.items():
            if not allowed:
                raise ValueError(f"the declared categories of '{column}' are empty: every row would be quarantined")
        return value

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for column, bounds in value.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"range for '{column}' must be [min, max] with min <= max")
        return value


class DriftConfig(_Section):
    """[drift]: drift tests, corrections and effect-size floors."""

    engine: Literal["alibi", "scipy"] = "alibi"
    p_value: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    psi_threshold: float = Field(0.2, ge=0.0, allow_inf_nan=False)
    wasserstein_threshold: float = Field(0.05, ge=0.0, allow_inf_nan=False, description="Wasserstein distance / reference std needed to call a numeric feature drifted")
    numeric_effect: Literal["wasserstein", "psi"] = "wasserstein"
    sample_size: int = Field(100_000, ge=100)
    seed: int = 0
    numeric_test: Literal["ks", "cvm"] = Field("ks", description="test for numeric features: two-sample Kolmogorov-Smirnov or Cramér-von Mises (binary features always get Fisher's exact test, other categorical ones chi-square)")
    prediction_test: Literal["ks", "uncertainty"] = Field("ks", description="prediction drift: the numeric test on the raw scores, or KS on the entropy of the probabilities (Alibi Detect's ClassifierUncertaintyDrift; blind to scores flipping across 0.5)")




class MonitorConfig(_Section):
    """[monitor]: production metrics on labelled batches."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="probability cut-off for the positive class")
    metric: str = Field("roc_auc", description="the metric whose drop triggers retraining")
    max_drop: float = Field(0.02, ge=0.0, description="drop from the training-time value that triggers retraining; also the alert threshold of every metric (a rise for log_loss and brier)")
    estimate: bool = Field(True, description="estimate accuracy, precision, recall, F1 and ROC AUC before labels come (CBPE on calibrated probabilities)")
    calibration: Literal["auto", "isotonic", "platt"] = Field("auto", description="how the estimate maps the production model's scores to probabilities: isotonic regression, Platt scaling, or 'auto', whichever of the two predicts held-out calibration rows better (5-fold cross-validated log loss)")
    calibrate_on: Literal["recent", "holdout"] = Field("recent", description="'recent': the newest labelled batches the production model scored before this one (out of time, as production sees them), its training holdout until there are any; 'holdout': always the training holdout (out of time under [retrain] holdout = 'time'; under 'random' it shares days with the training rows and flatters the model)")
    calibration_batches: int = Field(3, ge=1, description="how many of those recent batches the estimate calibrates on")
    prior_shift: Literal["none", "em"] = Field("none", description="'em' re-weights the calibrated probabilities to the batch's class prior estimated by EM (Saerens et al. 2002) before estimating; right under pure label shift, but on the demo it doubled the accuracy error (7.7 against 4.1 points), so off by default")


class RetrainConfig(_Section):
    """[retrain]: when and on what to retrain."""

    window: int = Field(3, ge=1, description="train on the last N labelled batches")
    every: int = Field(0, ge=0, description="retrain every N batches regardless (0 = never by schedule)")
    on_drift: bool = True
    min_drifted: int = Field(1, ge=1, description="drifted features needed to trigger retraining")
    on_drop: bool = True
    cooldown: int = Field(1, ge=0, description="batches to wait after a training before the next one")
    holdout_share: float = Field(0.3, gt=0.0, lt=1.0, description="share of the newest batch held out for evaluation")
    holdout: Literal["time", "random"] | None = Field(None, description="how the holdout is drawn from the newest batch: 'time' (the default when `timestamp` is set): its last days, about holdout_share of its rows, the candidate trained only on earlier days (no UTC day in both); 'random' (the default without a timestamp): rows at random, training on the rest of the same days")
    seed: int = 42
    params: dict[str, Any] = Field(default_factory=dict, description="LightGBM parameters over keel's defaults")
    num_boost_round: int = Field(200, ge=1)


METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")  # what keel measures


def _known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r} (one of {', '.join(METRICS)})")
    return name


class GateConfig(_Section):
    """[gate]: the promotion policy (minimums: floors, or ceilings for log_loss and brier)."""

    metric: str = "roc_auc"
    margin: float = Field(0.01, ge=0.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    auto_promote: bool = True
    max_churn: float | None = Field(None, ge=0.0, le=1.0)
    guard_metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    minimums: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.6})
    review_on_drift: bool = False
    n_boot: int = Field(500, ge=50)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _known_metric(value)

    @field_validator("guard_metrics")
    @classmethod
    def _guards(cls, value: list[str]) -> list[str]:
        return [_known_metric(name) for name in value]

    @field_validator("minimums")
    @classmethod
    def _minimums(cls, value: dict[str, float]) -> dict[str, float]:
        return {_known_metric(name): bound for name, bound in value.items()}

    def policy_hash(self) -> str:
        """First 16 hex chars of the SHA-256 of the policy's canonical JSON: which rules made a decision."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ReviewConfig(_Section):
    """[review]: who may decide, and whether a flagged run waits."""

    approvers: list[str] = Field(default_factory=list, description="OS users who may approve, reject, promote and roll back; empty = anyone")
    required_approvals: int = Field(1, ge=1)
    wait: bool = False
    timeout: int = Field(3600, ge=1, description="seconds a waiting run waits before rejecting")


class AlertsConfig(_Section):
    """[alerts]: alert rules and delivery."""

    urls: list[str] = Field(default_factory=list, description="Apprise URLs")
    on_drift: bool = Field(True, description="alert when the drift of the features the production model relies on reaches drift_threshold (importance-weighted drift)")
    drift_threshold: float = Field(0.5, gt=0.0, allow_inf_nan=False, description="importance-weighted drift that fires the drift alert: the sum over drifted features of their share of the model's importance (gain) times their effect size (Wasserstein distance / reference std, or PSI)")
    on_prediction_drift: bool = Field(True, description="alert when the production model's scores drift from those on its reference (the [drift] test) by at least prediction_effect")
    prediction_effect: float = Field(0.25, gt=0.0, allow_inf_nan=False, description="effect size (Wasserstein distance / reference std of the scores) a prediction drift needs to fire")
    on_feature_drift: bool = Field(False, description="alert whenever any feature drifts, however little the model uses it (noisy: on seasonal data it fires on every batch)")
    on_drop: bool = Field(True, description="alert when the realised [monitor] metric falls more than max_drop below training")
    on_estimated_drop: bool = Field(True, description="alert when the label-free estimate of the [monitor] metric falls more than max_drop below training")
    on_failure: bool = Field(True, description="alert when a pipeline run fails")
    on_quarantine: bool = Field(True, description="alert when a whole batch is quarantined")
    persist_k: int = Field(1, ge=1, description="fire after k of the last n batches")
    persist_n: int = Field(1, ge=1, description="the n of k-of-n; must be at least persist_k")
    cooldown: int = Field(0, ge=0, description="batches between two alerts of one rule")

    @model_validator(mode="after")
    def _k_of_n(self) -> AlertsConfig:
        if self.persist_k > self.persist_n:
            raise ValueError(f"persist_k ({self.persist_k}) must not exceed persist_n ({self.persist_n})")
        return self


class StoreConfig(_Section):
    """[store]: overrides of KEEL_DATABASE_URL / KEEL_ARTIFACTS_URL for this project."""

    database_url: str | None = None
    artifacts_url: str | None = None


class ProjectConfig(_Section):
    """keel.toml: one model on one kind of tabular data."""

    model: str = Field(min_length=1, description="registry name of the model")
    target: str = Field(min_length=1, description="label column")
    positive: str | int | bool | None = Field(None, description="the positive class value")
    id: str | None = Field(None, description="row id column")
    timestamp: str | None = Field(None, description="event time column (never a feature)")
    categorical: list[str] | None = Field(None, description="categorical features; default: string columns")
    exclude: list[str] = Field(default_factory=list, description="columns that are never features")
    contract: ContractConfig = Field(default_factory=ContractConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @model_validator(mode="after")
    def _holdout_needs_time(self) -> ProjectConfig:
        if self.retrain.holdout == "time" and not self.timestamp:
            raise ValueError("[retrain] holdout = 'time' needs 'timestamp' (the event-time column) to be set")
        return self

    @property
    def holdout(self) -> Literal["time", "random"]:
        """The holdout scheme in force: [retrain] holdout, else 'time' with a timestamp and 'random' without."""
        return self.retrain.holdout or ("time" if self.timestamp else "random")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("use letters, digits, '-', '_' or '.'")
        return value

    def config_hash(self) -> str:
        """A stable hash of the whole configuration."""
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16]

    def settings(self, base: Settings | None = None) -> Settings:
        """The environment settings with this project's [store] overrides applied."""
        base = base or Settings()
        updates = {k: v for k, v in self.store.model_dump().items() if v is not None}
        return base.model_copy(update=updates) if updates else base


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_config(data: dict[str, Any], source: str = "keel.toml") -> ProjectConfig:
    """Validate a parsed keel.toml, turning the first problem into a ConfigError naming the key."""
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key_path(err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown key '{key}'") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: required key '{key}' is missing") from None
        if not err["loc"]:  # a rule across keys names them itself
            raise ConfigError(f"{source}: {err['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(f"{source}: bad value for '{key}': {err['msg']}") from None


def load_config(path: str | Path | None = None) -> ProjectConfig:
    """Read keel.toml (default: ./keel.toml)."""
    path = Path(path) if path else Path("keel.toml")
    if not path.exists():
        raise ConfigError(f"{path}: no such configuration file (run 'keel init' to write one)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path))

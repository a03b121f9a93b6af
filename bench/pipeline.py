"""Benchmark: the demo's twelve months through keel, beside a bare script doing the same work.

One run does, per round (rounds are interleaved so both sides see the same machine load):

1. keel cold: a fresh KEEL_HOME (a fresh store, and a fresh PREFECT_HOME seeded with keel's migrated Prefect
   database) running `keel demo --json` in a subprocess, on Prefect's temporary server;
2. the bare script, in a subprocess: the same computations (read the Parquet batch, the same data
   contract, LightGBM predict, the same drift tests, the same metrics, LightGBM training with the same
   parameters on the same windows and the same holdout comparison) with no Prefect and no store. It
   follows keel's own decisions (read from the cold run's JSON), so both sides train the same models;
   it times each month, so its first months and its last month alone are floors too;
3. keel's cached rerun: `keel demo` again on the same KEEL_HOME, run as the plain command (no timers: it
   answers every month from the store, keel.core.pipeline.recall, and imports no Prefect to time); every
   stage must be recorded as a hit and the store must not change but for the replays' rows: checked;
4. with a long-lived server (`keel server start` in another fresh KEEL_HOME, untimed): `keel demo` on all
   months but the last, then `keel run` on the last month's batch, as a user adds one batch; both against the
   bare script's same months (and their results checked against it);
then, once per run: the TUI's start-up on bench/tui.py's 100k-run store beside a bare Textual app's start-up,
interleaved, and a Prefect probe in a fresh PREFECT_HOME (server start, cost of a flow run, a task, a cached
task, and of persisting or hashing large values).

The keel subprocess runs the real `keel demo` (or `keel run`) command (click, in-process) with light timers
wrapped around keel and Prefect functions, so its wall time can be split into imports, waiting for the server,
Prefect per-flow and per-task overhead, store writes, artifact hashing and the computations themselves.
The bare script's models must have the same SHA-256 as keel's: that proves both did the same work.

Run:  PYTHONPATH=. python bench/pipeline.py [--months 12] [--rounds 2] [--tui-repeat 5] [--no-probe] [--json FILE]
      PYTHONPATH=. python bench/pipeline.py --tui-only [--tui-repeat 9] [--tui-home DIR] [--tui-against REV]
      (the TUI's start-up alone; --tui-against also starts keel's TUI at another git revision, interleaved)
See bench/README.md, "## Pipeline".
"""

from __future__ import annotations

import argparse
import compileall
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
# tables whose content must not change on a cached rerun (pipeline_run and stage_run gain replay rows)
STABLE_TABLES = ("dataset_version", "dataset_lineage", "model_version", "alias", "prediction_set", "prediction",
                 "quarantine", "drift_report", "feature_drift", "metric_point", "review", "review_decision",
                 "audit_event", "alert")


# --- timers ---------------------------------------------------------------------------------------


class Timers:
    """Inclusive and exclusive wall time per label; exclusive = minus time in nested timed calls."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = {}
        self.local = threading.local()

    def wrap(self, label: Any, fn: Any) -> Any:
        timers = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(timers.local, "stack", None)
            if stack is None:
                stack = timers.local.stack = []
            name = label(args) if callable(label) else label
            stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                nested = stack.pop()
                if stack:
                    stack[-1] += spent
                row = timers.stats.setdefault(name, [0, 0.0, 0.0])
                row[0] += 1
                row[1] += spent
                row[2] += spent - nested

        return timed

    def patch(self, module: str, qualname: str, label: Any = None) -> None:
        import importlib

        owner: Any = importlib.import_module(module)
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attr, self.wrap(label or qualname, getattr(owner, attr)))

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"calls": int(v[0]), "incl_s": v[1], "excl_s": v[2]} for k, v in sorted(self.stats.items())}


# what the keel subprocess times: (module, function, label); labels group the report
KEEL_TIMED = [
    ("keel.flows.local_server", "TemporaryServer.wait", "prefect: server start"),
    ("prefect.results", "ResultStore._persist_result_record", "prefect: persist result"),
    ("prefect.results", "ResultStore._read", "prefect: read cached result"),
    ("prefect.results", "ResultStore._exists", "prefect: cache lookup"),
    ("prefect.cache_policies", "CompoundCachePolicy.compute_key", "prefect: cache key"),
    ("keel.core.pipeline.stages", "ingest", "core: ingest"),
    ("keel.core.pipeline.stages", "validate_batch", "core: validate"),
    ("keel.core.pipeline.stages", "score", "core: score"),
    ("keel.core.pipeline.stages", "drift", "core: drift"),
    ("keel.core.pipeline.stages", "monitor", "core: monitor"),
    ("keel.core.pipeline.stages", "make_training_sets", "core: datasets"),
    ("keel.core.pipeline.stages", "train", "core: train"),
    ("keel.core.pipeline.stages", "evaluate", "core: evaluate"),
    ("keel.core.pipeline.stages", "gate", "core: gate"),
    ("keel.core.pipeline.stages", "load_dataset", "io: load_dataset (read+sha256+parse)"),
    ("keel.core.pipeline.stages", "batch_ids", "io: batch_ids"),
    ("keel.core.pipeline.stages", "contract_for", "core: contract_for"),
    ("keel.core.pipeline.stages", "snapshot_file", "io: copy + sha256 of the batch file"),
    ("keel.core.pipeline.stages", "read_batch", "io: read_batch"),
    ("keel.core.data.artifacts", "Artifacts.read_verified", "io: read artifact + sha256"),
    ("keel.core.data.artifacts", "Artifacts.put_file", "io: put artifact"),
    ("keel.core.data.artifacts", "Artifacts.put_bytes", "io: put artifact"),
    ("keel.core.data.batches", "frame_bytes", "io: frame to parquet bytes"),
    ("keel.core.model.train", "train_model", "compute: lightgbm train"),
    ("keel.core.model.train", "predict", "compute: predict"),
    ("keel.core.model.train", "load_booster", "compute: parse model text"),
    ("keel.core.drift.detect", "detect_drift", "compute: detect_drift"),
    ("keel.core.model.evaluate", "compare_models", "compute: compare_models"),
    ("keel.core.store.records", "record_predictions", "store: record_predictions"),
    ("keel.core.store.records", "record_quarantine", "store: record_quarantine"),
    ("keel.core.store.records", "record_drift", "store: record_drift"),
    ("keel.core.store.records", "record_metrics", "store: record_metrics"),
    ("keel.core.store.records", "record_stage", "store: record_stage"),
    ("keel.core.store.records", "register_dataset", "store: register_dataset"),
    ("keel.core.store.records", "register_model", "store: register_model"),
    ("keel.core.store.records", "start_run", "store: runs"),
    ("keel.core.store.records", "update_run", "store: runs"),
    ("keel.core.store.records", "completed_run", "store: runs"),
    ("keel.core.store.records", "quarantined_rows", "store: quarantined_rows"),
    ("keel.core.pipeline.stages", "model_runs", "store: model_runs"),
    ("keel.core.registry.transactions", "promote", "store: registry"),
    ("keel.core.registry.transactions", "reject", "store: registry"),
    ("keel.core.registry.transactions", "open_review", "store: registry"),
    ("keel.core.registry.transactions", "production_version", "store: registry"),
    ("keel.flows.run_pipeline", "workspace_ref", "flow: workspace_ref"),
]


def count_retries(timers: Timers) -> None:
    """Count Prefect client retries (HTTP 503 when the server's SQLite is locked) and their back-off."""
    import prefect.client.base as base

    original = base._record_if_maintenance_backoff

    def record(response: Any, exc_info: Any, retry_seconds: float) -> Any:
        row = timers.stats.setdefault("prefect: client retry back-off (info)", [0, 0.0, 0.0])
        row[0] += 1
        row[1] += retry_seconds
        return original(response, exc_info, retry_seconds)

    base._record_if_maintenance_backoff = record


# --- the keel subprocess --------------------------------------------------------------------------


def keel_worker(args: argparse.Namespace) -> None:
    """`keel demo --json` (or `keel run --json BATCH`) in this process, with timers; writes a JSON result to
    args.out."""
    begun = time.time()
    import atexit
    import contextlib

    # registered first, so it runs after every other atexit handler (Prefect's server stop among them)
    atexit.register(lambda: Path(args.out).with_suffix(".exit").write_text(str(time.time())))
    argv = json.loads(args.argv) if args.argv else ["demo", "--json", "--months", str(args.months)]

    t = time.perf_counter()
    from keel.cli import pipeline as cli_pipeline
    from keel.cli.main import cli

    if args.plain:  # the command as it is, untimed inside: a replay from the store imports no Prefect to time
        _write_result(args, begun, 0.0, *_run_command(cli, argv), [], {})
    # what the command does first (keel demo and keel run start the temporary server before their heavy imports);
    # the command's own call then finds it started. With a long-lived server up it starts nothing.
    cli_pipeline._start_server_early()
    import keel.flows.run_pipeline as flows  # configures Prefect from KEEL_HOME

    import_s = time.perf_counter() - t
    what_if = contextlib.ExitStack()
    if os.environ.get("KEEL_BENCH_WHAT_IF"):  # bench/profile_pipeline.py: measure a proposed change
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from profile_pipeline import apply_what_ifs

        what_if = apply_what_ifs(os.environ["KEEL_BENCH_WHAT_IF"].split(","))
    timers = Timers()
    for module, name, label in KEEL_TIMED:
        timers.patch(module, name, label)
    timers.patch("keel.flows.run_pipeline", "Stages.__call__", lambda a: f"task: {a[1]}")
    count_retries(timers)
    body = timers.wrap("flow: body", flows.run_pipeline.fn)
    bodies: list[float] = []

    def timed_body(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return body(*a, **k)
        finally:
            bodies.append(time.perf_counter() - start)

    flows.run_pipeline.fn = timed_body
    calls: list[dict[str, Any]] = []
    run_flow = timers.wrap("flow: call", cli_pipeline._run_flow)

    def timed_run_flow(batch: str, config: str) -> dict[str, Any]:
        start = time.perf_counter()
        out = run_flow(batch, config)
        calls.append({"batch": Path(batch).name, "wall_s": time.perf_counter() - start, "body_s": bodies[-1]})
        return out

    cli_pipeline._run_flow = timed_run_flow
    with what_if:
        demo_s, summaries = _run_command(cli, argv)
    _write_result(args, begun, import_s, demo_s, summaries, calls, timers.as_dict())


def _run_command(cli: Any, argv: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """The keel command through click in this process: its wall time and the summaries it printed as JSON."""
    import contextlib
    import io

    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        try:
            cli.main(argv, prog_name="keel", standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
    demo_s = time.perf_counter() - t
    summaries = json.loads(buf.getvalue())
    return demo_s, summaries if isinstance(summaries, list) else [summaries]  # keel run prints one summary


def _write_result(args: argparse.Namespace, begun: float, import_s: float, demo_s: float,
                  summaries: list[dict[str, Any]], calls: list[dict[str, Any]], timers: dict[str, Any]) -> None:
    """The worker's JSON result (with the store's model SHA-256s and the heavy modules imported), then exit."""
    with sqlite3.connect(Path(os.environ["KEEL_HOME"]) / "keel.db") as db:
        shas = dict(db.execute("select version, artifact_sha256 from model_version").fetchall())
    result = {"begun": begun, "import_s": import_s, "demo_s": demo_s, "calls": calls, "timers": timers,
              "summaries": summaries, "model_sha": {str(k): v for k, v in shas.items()},
              "imported": sorted(m for m in ("lightgbm", "alibi_detect", "prefect", "prefect.server.api.server")
                                 if m in sys.modules), "ended": time.time()}
    Path(args.out).write_text(json.dumps(result))
    from keel.cli.main import _exit

    _exit(0)  # as the keel command leaves: atexit handlers (Prefect's server stop), then no module teardown


# --- the bare subprocess ----------------------------------------------------------------------------


def bare_worker(args: argparse.Namespace) -> None:
    """The same computations as keel's pipeline, with plain calls: no Prefect, no store, no hashing."""
    begun = time.time()
    phases: dict[str, float] = {}

    def phase(name: str, start: float) -> float:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - start
        return now

    t = time.perf_counter()
    import tomllib

    import lightgbm as lgb
    import numpy as np
    import polars as pl

    from keel.core.config import DriftConfig, parse_config
    from keel.core.data.contract import Contract, learn_contract, validate
    from keel.core.data.demo import DEMO_CONFIG
    from keel.core.data.features import feature_spec, label_array
    from keel.core.drift.detect import detect_drift, label_drift, score_drift
    from keel.core.model.evaluate import classification_metrics, compare_models, confusion_drift
    from keel.core.model.train import DEFAULT_PARAMS
    from keel.core.monitoring.calibration import MIN_CALIBRATION_ROWS
    from keel.core.monitoring.estimate import ESTIMATED, estimate_metrics, fit_calibrator
    from keel.core.pipeline.holdout import split

    cfg = parse_config(tomllib.loads(DEMO_CONFIG))
    if cfg.drift.engine == "alibi":  # keel imports it on the first drift test: here up front, so that a month's
        from alibi_detect.cd.tabular import TabularDrift  # noqa: F401   time is that month's work alone
    t = phase("imports", t)
    plan = json.loads(Path(args.plan).read_text())
    batches = sorted(Path(args.batches).glob("*.parquet"))[: args.months]
    params = {**DEFAULT_PARAMS, **cfg.retrain.params, "seed": cfg.retrain.seed}
    rounds, threshold = cfg.retrain.num_boost_round, cfg.monitor.threshold
    settings = DriftConfig(**cfg.drift.model_dump())

    def matrix(frame: pl.DataFrame, features: list[str], categories: dict[str, list[str]]) -> np.ndarray:
        cols = [pl.col(c).cast(pl.String).replace_strict(categories[c], [float(i) for i in range(len(categories[c]))],
                                                         default=None, return_dtype=pl.Float64)
                if c in categories else pl.col(c).cast(pl.Float64) for c in features]
        return frame.select(cols).to_numpy()

    def fit(frame: pl.DataFrame, spec: Any) -> dict[str, Any]:
        categories = {c: sorted(str(v) for v in frame[c].drop_nulls().unique().to_list()) for c in spec.categorical}
        data = lgb.Dataset(matrix(frame, spec.features, categories), label=label_array(frame, spec),
                           feature_name=spec.features, categorical_feature=[spec.features.index(c) for c in spec.categorical],
                           free_raw_data=True, params={"verbosity": -1})
        booster = lgb.train(params, data, num_boost_round=rounds)
        gains = booster.feature_importance(importance_type="gain")
        text = booster.model_to_string()
        return {"booster": booster, "categories": categories, "spec": spec,
                "importance": dict(zip(spec.features, (gains / (gains.sum() or 1.0)).tolist(), strict=True)),
                "sha256": hashlib.sha256(text.encode()).hexdigest()}

    def predict(model: dict[str, Any], frame: pl.DataFrame) -> np.ndarray:
        X = matrix(frame, model["spec"].features, model["categories"])
        return np.asarray(model["booster"].predict(X, num_threads=params["num_threads"]), dtype=np.float64)

    monitor = cfg.monitor
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in batches]  # keel's dataset ids: the files' SHA-256

    def estimate(production: dict[str, Any], scores: np.ndarray, scored: list[dict[str, Any]]) -> dict[str, Any]:
        """keel's label-free estimate (core.monitoring.hooks.after_scoring, core.monitoring.calibration): calibrated on
        the newest labelled batches this production model scored (their labelled rows as keel's prediction table
        gives them: batches in id order, rows in row-id order), else on its training holdout."""
        recent = []
        if monitor.calibrate_on == "recent":
            recent = [m for m in reversed(scored) if m["model"] is production and m["y"].size]
            recent = recent[: monitor.calibration_batches]
        if sum(m["y"].size for m in recent) >= MIN_CALIBRATION_ROWS:
            recent.sort(key=lambda m: m["id"])
            y, s = np.concatenate([m["y"] for m in recent]), np.concatenate([m["s"] for m in recent])
        else:
            y, s = label_array(production["holdout"], production["spec"]), production["holdout_scores"]
        est = estimate_metrics(scores, fit_calibrator(y, s, monitor.calibration), threshold, monitor.prior_shift)
        return {k: est[k] for k in ESTIMATED}

    production: dict[str, Any] | None = None
    labelled: dict[int, pl.DataFrame] = {}
    scored: list[dict[str, Any]] = []  # per month scored: the model, the batch's labelled rows' labels and scores
    months: list[dict[str, Any]] = []
    t = phase("setup", t)
    for i, path in enumerate(batches):
        out: dict[str, Any] = {"month": i}
        month_start = time.perf_counter()
        frame = pl.read_parquet(path)
        t = phase("read parquet", t)
        if production is not None:
            contract = Contract.from_dict({**production["contract"], "ranges": dict(cfg.contract.ranges)})
        else:
            contract = learn_contract(frame, feature_spec(cfg, frame), cfg.contract.ranges)
        checked = validate(frame, contract, cfg.contract)
        bad = checked.bad_indices
        keep = np.ones(frame.height, dtype=bool)
        keep[bad] = False
        good = frame.filter(pl.Series(keep)) if bad else frame
        labelled[i] = good.filter(pl.col(cfg.target).is_not_null())
        out["bad_rows"] = len(bad)
        t = phase("validate", t)
        if production is not None:
            spec = production["spec"]
            scores = predict(production, good)
            if "holdout_scores" not in production:
                production["holdout_scores"] = predict(production, production["holdout"])
            t = phase("score (predict)", t)
            report = detect_drift(production["train"], good, spec.features, spec.categorical, settings,
                                  production["importance"])
            score_drift(production["holdout_scores"], scores, settings)
            ref_y, cur_y = label_array(production["train"], spec), label_array(good, spec)
            label_drift(ref_y[~np.isnan(ref_y)], cur_y[~np.isnan(cur_y)], settings)
            out["drifted"] = report.drifted()
            t = phase("drift", t)
            mask = ~np.isnan(cur_y)
            metrics = classification_metrics(cur_y[mask].astype(int), scores[mask], threshold)
            confusion_drift(production["metrics"]["confusion"], metrics["confusion"])
            out["roc_auc"] = metrics["roc_auc"]
            t = phase("metrics", t)
            if monitor.estimate:
                out["estimate"] = estimate(production, scores, scored)
                rows = pl.DataFrame({"id": good[spec.id].cast(pl.String), "y": cur_y, "s": scores})
                rows = rows.filter(pl.col("y").is_not_nan()).sort("id")
                scored.append({"model": production, "id": ids[i], "y": rows["y"].to_numpy(),
                               "s": rows["s"].to_numpy()})
                t = phase("label-free estimate", t)
        step = plan[i]
        if step["retrain"]:
            parts = [labelled[m] for m in step["window"]]
            train, holdout = split(parts, cfg.holdout, cfg.retrain.holdout_share, cfg.retrain.seed, cfg.timestamp)
            spec = feature_spec(cfg, train)
            t = phase("training sets", t)
            candidate = fit(train, spec)
            candidate.update(train=train, holdout=holdout, contract=learn_contract(train, spec, cfg.contract.ranges).to_dict())
            out["model_sha"] = candidate["sha256"]
            t = phase("train (lightgbm)", t)
            y = label_array(holdout, spec).astype(int)
            cand_p = predict(candidate, holdout)
            candidate["metrics"] = classification_metrics(y, cand_p, threshold)
            if production is not None:
                prod_p = predict(production, holdout)
                classification_metrics(y, prod_p, threshold)
                compare_models(y, cand_p, prod_p, alpha=cfg.gate.alpha, n_boot=cfg.gate.n_boot, threshold=threshold)
            t = phase("evaluate (predict + compare_models)", t)
            if step["decision"] == "promoted":
                production = candidate
        out["wall_s"] = time.perf_counter() - month_start
        months.append(out)
    Path(args.out).write_text(json.dumps({"begun": begun, "phases": phases, "months": months, "ended": time.time()}))


# --- the Prefect probe ----------------------------------------------------------------------------


def probe_worker(args: argparse.Namespace) -> None:
    """Prefect's own costs with keel's settings, in a fresh PREFECT_HOME under args.home."""
    begun = time.time()
    os.environ["KEEL_HOME"] = args.home  # before Prefect is configured from KEEL_HOME
    from keel.flows.settings import configure_prefect

    configure_prefect()

    out: dict[str, Any] = {"begun": begun}
    t = time.perf_counter()
    import numpy as np
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.server.api.server import SubprocessASGIServer

    out["import_prefect_s"] = time.perf_counter() - t
    t = time.perf_counter()
    server = SubprocessASGIServer()
    server.start()
    out["server_start_fresh_s"] = time.perf_counter() - t
    server.stop()
    t = time.perf_counter()
    SubprocessASGIServer().start()  # the same home, already migrated; the flows below reuse it
    out["server_start_migrated_s"] = time.perf_counter() - t
    t = time.perf_counter()
    from alibi_detect.cd.tabular import TabularDrift  # noqa: F401

    out["import_alibi_s"] = time.perf_counter() - t

    cached = INPUTS + TASK_SOURCE

    @task
    def plain(i: int) -> int:
        return i

    @task(persist_result=False)
    def unpersisted(i: int) -> int:
        return i

    @task(cache_policy=cached, persist_result=True)
    def cached_small(i: int) -> dict[str, int]:
        return {"i": i}

    @task(cache_policy=cached, persist_result=True)
    def make_scores(seed: int) -> Any:
        return np.random.default_rng(seed).random(28_000)

    @task(cache_policy=cached, persist_result=True)
    def take_scores(scores: Any) -> float:
        return float(scores[0])

    @task(cache_policy=cached, persist_result=True)
    def make_model(seed: int) -> dict[str, str]:
        return {"text": "x" * 700_000 + str(seed)}

    @flow
    def empty() -> int:
        return 1

    @flow
    def many(kind: str, k: int, offset: int = 0) -> float:
        """Seconds spent calling k tasks, timed inside the flow (free of the flow run's own cost)."""
        fn = {"plain": plain, "unpersisted": unpersisted, "cached": cached_small}[kind]
        start = time.perf_counter()
        for i in range(offset, offset + k):
            fn(i)
        return time.perf_counter() - start

    @flow
    def large(seed: int) -> None:
        scores = make_scores(seed)
        take_scores(scores)
        make_model(seed)

    def timed(fn: Any, *a: Any) -> float:
        time.sleep(1.5)  # let the server record the previous run's events: no SQLite-locked 503 back-off
        start = time.perf_counter()
        fn(*a)
        return time.perf_counter() - start

    timers = Timers()
    count_retries(timers)
    out["first_flow_s"] = timed(empty)
    out["flow_s"] = statistics.median(timed(empty) for _ in range(5))
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # the heartbeat thread's join rounds every flow run up to its 1 s sleep: task costs hide in it
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        out["flow_no_heartbeat_s"] = base = statistics.median(timed(empty) for _ in range(5))
        n, reps = 40, 3
        for kind in ("plain", "unpersisted", "cached"):
            per = [many(kind, n, 1000 * (rep + 1)) / n for rep in range(reps)]
            out[f"task_{kind}_ms"] = statistics.median(per) * 1000
        per = [many("cached", n, 1000) / n for _ in range(reps)]
        out["task_cached_hit_ms"] = statistics.median(per) * 1000
        out["large_miss_s"] = timed(large, 1) - base
        out["large_hit_s"] = statistics.median(timed(large, 1) for _ in range(3)) - base
        out["back_to_back_no_heartbeat_s"] = [round(timed(many, "plain", 10) if i == 0 else _quick(many), 2)
                                              for i in range(6)]
    out["retries"] = timers.stats.get("prefect: client retry back-off (info)", [0, 0.0, 0.0])[:2]
    out["ended"] = time.time()
    Path(args.out).write_text(json.dumps(out))


def _quick(fn: Any) -> float:
    """A flow of 10 tasks right after the previous one (no pause): shows the 503 back-off."""
    start = time.perf_counter()
    fn("plain", 10)
    return time.perf_counter() - start


# --- the parent ----------------------------------------------------------------------------------------


def snapshot(work: Path) -> Path:
    """A copy of keel's source for every subprocess of this run: edits to the work tree meanwhile
    (other engineers commit while a run takes minutes) would change the code, config hash or task
    source between the cold run and the rerun, and the rerun would not be a replay."""
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "keel", src / "keel", ignore=ignore)
    for package in ("core", "flows", "tui", "cli"):  # laid out as installed: keel.core is core/, and so on
        shutil.copytree(REPO / package, src / "keel" / package, ignore=ignore)
    return src


SRC = REPO  # replaced by run_bench with the snapshot


def child_env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["PYTHONWARNINGS"] = "ignore"
    if home is not None:
        env["KEEL_HOME"] = str(home)
    return env


def run_child(worker: str, out: Path, env: dict[str, str], cwd: Path, *extra: str) -> dict[str, Any]:
    """Run a worker subprocess; wall and CPU time (its own and its children's, e.g. Prefect's server)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--out", str(out), *extra]
    log = out.with_suffix(".log")
    start_epoch, start = time.time(), time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{worker} worker failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    result = json.loads(out.read_text())
    result.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, start_epoch=start_epoch,
                  startup_s=result["begun"] - start_epoch, exit_s=start_epoch + wall - result["ended"])
    if out.with_suffix(".exit").exists():  # atexit handlers vs interpreter teardown after them
        result["atexit_s"] = float(out.with_suffix(".exit").read_text()) - result["ended"]
    return result


def store_snapshot(db: Path) -> dict[str, str]:
    """A digest per table whose content a cached rerun must leave as it was."""
    out = {}
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        for table in STABLE_TABLES:
            if table in tables:
                rows = conn.execute(f"select * from {table}").fetchall()  # noqa: S608 - fixed names
                digest = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()[:12]
                out[table] = f"{len(rows)} rows {digest}"
    return out


def replay_cache(db: Path) -> dict[str, list[int]]:
    """Per stage of the replayed runs: [completed, of them cache hits]."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select s.name, count(*), sum(s.cached) from stage_run s join pipeline_run r "
                            "on r.id = s.run_id where r.replay_of is not null and s.status = 'completed' "
                            "group by s.name").fetchall()
    return {name: [n, hits or 0] for name, n, hits in rows}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan_from(summaries: list[dict[str, Any]], batch_ids: list[str]) -> list[dict[str, Any]]:
    """keel's decisions per month, with windows as month indices, for the bare script to follow."""
    index = {sha: i for i, sha in enumerate(batch_ids)}
    return [{"retrain": bool(s.get("retrain")), "window": [index[w] for w in s.get("window") or []],
             "decision": s.get("decision")} for s in summaries]


def verify(keel: dict[str, Any], bare: dict[str, Any]) -> list[str]:
    """Differences between keel's results and the bare script's (empty when they did the same work)."""
    from keel.core.monitoring.estimate import ESTIMATED

    problems = []
    trainings = 0
    for s, b in zip(keel["summaries"], bare["months"], strict=True):
        m = MONTHS[b["month"]]
        if s.get("quarantined_rows", 0) != b["bad_rows"]:
            problems.append(f"{m}: quarantined rows keel {s.get('quarantined_rows')} bare {b['bad_rows']}")
        auc = (s.get("metrics") or {}).get("roc_auc")
        if (auc is None) != (b.get("roc_auc") is None) or auc is not None and abs(auc - b["roc_auc"]) > 1e-9:
            problems.append(f"{m}: production roc_auc keel {auc} bare {b.get('roc_auc')}")
        estimate = {k: v for k, v in (s.get("estimate") or {}).items() if k in ESTIMATED}
        if estimate.keys() != (b.get("estimate") or {}).keys() or any(
                v is None or abs(v - b["estimate"][k]) > 1e-9 for k, v in estimate.items()):
            problems.append(f"{m}: label-free estimate keel {estimate} bare {b.get('estimate')}")
        drifted = (s.get("drift") or {}).get("drifted")
        if drifted is not None and sorted(drifted) != sorted(b.get("drifted") or []):
            problems.append(f"{m}: drifted keel {drifted} bare {b.get('drifted')}")
        if s.get("model_version"):
            trainings += 1
            if keel["model_sha"].get(str(s["model_version"])) != b.get("model_sha"):
                problems.append(f"{m}: model v{s['model_version']} SHA-256 differs from the bare script's")
    if not trainings:
        problems.append("no training to compare")
    return problems


def timer(result: dict[str, Any], label: str, key: str = "incl_s") -> float:
    return result["timers"].get(label, {}).get(key, 0.0)


def breakdown(cold: dict[str, Any]) -> list[tuple[str, float]]:
    """Where keel's cold wall time goes, as disjoint parts that add up to the subprocess wall time."""
    t = cold["timers"]
    excl = {k: v["excl_s"] for k, v in t.items()}
    group = lambda prefix: sum(v for k, v in excl.items() if k.startswith(prefix))  # noqa: E731
    tasks = sum(v for k, v in excl.items() if k.startswith("task: "))
    parts = [
        ("interpreter start + imports (keel, Prefect, polars, sqlmodel...)", cold["startup_s"] + cold["import_s"]),
        ("waiting for Prefect's temporary server (its start not hidden by the imports)", excl.get("prefect: server start", 0.0)),
        ("Prefect per-flow-run overhead (create run, states, flow result)", excl.get("flow: call", 0.0)),
        ("Prefect per-task overhead (task runs, states, events)", tasks),
        ("Prefect cache keys (hashing task inputs)", excl.get("prefect: cache key", 0.0)),
        ("Prefect result persistence (serialize + write)", excl.get("prefect: persist result", 0.0)),
        ("Prefect cache lookups/reads", excl.get("prefect: cache lookup", 0.0) + excl.get("prefect: read cached result", 0.0)),
        ("store writes: predictions", excl.get("store: record_predictions", 0.0)),
        ("store: other writes and reads", group("store: ") - excl.get("store: record_predictions", 0.0)),
        ("artifacts: read + SHA-256 verify, hash, copy, parquet encode", group("io: ")),
        ("compute: LightGBM training", excl.get("compute: lightgbm train", 0.0)),
        ("compute: predict (design matrix + LightGBM)", excl.get("compute: predict", 0.0)),
        ("compute: parse model text (load_booster)", excl.get("compute: parse model text", 0.0)),
        ("compute: drift tests (detect_drift; first call imports alibi)", excl.get("compute: detect_drift", 0.0)),
        ("compute: compare_models (DeLong, bootstrap)", excl.get("compute: compare_models", 0.0)),
        ("compute: rest of core stages (contract, metrics, label/score drift, sets)", group("core: ")),
        ("flow body outside stages (workspace, flow glue)", excl.get("flow: body", 0.0) + excl.get("flow: workspace_ref", 0.0)),
        ("demo command outside flows (batches check, config, JSON)", cold["demo_s"] - t.get("flow: call", {}).get("incl_s", 0.0)),
        ("exit: threads, atexit (server stop)", cold.get("atexit_s", cold["exit_s"])),
        ("exit: interpreter teardown after atexit", cold["exit_s"] - cold.get("atexit_s", cold["exit_s"])),
    ]
    accounted = sum(v for _, v in parts)
    parts.append(("unaccounted", cold["wall_s"] - accounted))
    return parts


def per_task(cold: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    """Per stage: calls, wall inside the stage, and what Prefect adds around keel's core function."""
    t = cold["timers"]
    rows = []
    for key, row in t.items():
        if not key.startswith("task: "):
            continue
        name = key[len("task: "):]
        rows.append((name, int(row["calls"]), row["incl_s"], row["excl_s"]))
    return sorted(rows, key=lambda r: -r[2])


def fmt_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats of cold / bare / rerun (0: probe only)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--no-probe", action="store_true", help="skip the Prefect probe")
    parser.add_argument("--tui-repeat", type=int, default=5, help="TUI start-ups of each side (0: skip the TUI)")
    parser.add_argument("--tui-only", action="store_true", help="the TUI's start-up alone (no demo rounds, no probe)")
    parser.add_argument("--tui-home", type=Path, help="reuse (or build into) this KEEL_HOME for the TUI's store")
    parser.add_argument("--tui-against", metavar="REV", help="also start keel's TUI at this git revision, interleaved")
    parser.add_argument("--worker", choices=["keel", "bare", "probe"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--argv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        {"keel": keel_worker, "bare": bare_worker, "probe": probe_worker}[args.worker](args)
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="keel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run_bench(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def run_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    global SRC
    sys.path.insert(0, str(REPO))
    from keel.core.data.demo import write_batches

    SRC = snapshot(work)
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    print(f"keel source: {rev or 'unknown'} (snapshot in {SRC})", flush=True)
    if args.tui_only:
        results: dict[str, Any] = {"rounds": [], "tui": tui_startup(work, args.tui_repeat or 5, args.tui_home,
                                                                   args.tui_against)}
        report(results)
        return results

    t = time.perf_counter()
    batches = write_batches(work / "batches", args.months)
    print(f"prepared {len(batches)} monthly batches in {time.perf_counter() - t:.1f} s (not timed below)",
          flush=True)
    ids = [sha256_file(p) for p in batches]
    results = {"rounds": []}
    if not args.no_probe:
        print("Prefect probe (fresh PREFECT_HOME) ...", flush=True)
        results["probe"] = run_child("probe", work / "probe.json", child_env(), work, "--home", str(work / "probe"))
    for r in range(args.rounds):
        home = work / f"round{r}" / ".keel"
        shutil.rmtree(home.parent, ignore_errors=True)
        (home / "demo" / "batches").mkdir(parents=True)
        for p in batches:  # the demo finds its batches already written: their preparation is not timed
            os.link(p, home / "demo" / "batches" / p.name)
        env = child_env(home)
        print(f"round {r + 1}: keel cold ...", end=" ", flush=True)
        cold = run_child("keel", work / f"cold{r}.json", env, home.parent, "--months", str(args.months))
        print(f"{cold['wall_s']:.1f} s; bare script ...", end=" ", flush=True)
        plan = work / f"plan{r}.json"
        plan.write_text(json.dumps(plan_from(cold["summaries"], ids)))
        bare = run_child("bare", work / f"bare{r}.json", child_env(), work, "--plan", str(plan),
                         "--batches", str(work / "batches"), "--months", str(args.months))
        print(f"{bare['wall_s']:.1f} s; keel cached rerun ...", end=" ", flush=True)
        before = store_snapshot(home / "keel.db")
        rerun = run_child("keel", work / f"rerun{r}.json", env, home.parent, "--months", str(args.months), "--plain")
        after = store_snapshot(home / "keel.db")
        print(f"{rerun['wall_s']:.1f} s", flush=True)
        changed = [k for k in before if before[k] != after.get(k)]
        warm, one = run_warm(args, work, r, batches)
        keel_all = {"summaries": warm["summaries"] + one["summaries"], "model_sha": one["model_sha"]}
        results["rounds"].append({"cold": cold, "bare": bare, "rerun": rerun, "verify": verify(cold, bare),
                                  "store_changed": changed, "store": after, "replay_cache": replay_cache(home / "keel.db"),
                                  "warm": warm, "one": one, "verify_warm": verify(keel_all, bare)})
    if args.tui_repeat:
        results["tui"] = tui_startup(work, args.tui_repeat, args.tui_home, args.tui_against)
    if args.json:  # before the report, so that a failing report loses no measurement
        args.json.write_text(json.dumps(results, indent=1, default=str))
    report(results)
    return results


def run_command(env: dict[str, str], cwd: Path, *argv: str) -> dict[str, Any]:
    """The `keel` command as a user types it, in a fresh process, timed from spawn to exit (with a long-lived
    server up, `keel server start`'s runner runs it); its summary from stdout, the store's model SHA-256s, and
    whether the runner served it (its log counts the commands it forked)."""
    runner_log = Path(env["KEEL_HOME"]) / "prefect" / "runner.log"
    served_before = runner_log.read_text().count("keel runner: serving") if runner_log.exists() else 0
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "keel", *argv], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"keel {' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    with sqlite3.connect(Path(env["KEEL_HOME"]) / "keel.db") as db:
        shas = dict(db.execute("select version, artifact_sha256 from model_version").fetchall())
    served = runner_log.exists() and runner_log.read_text().count("keel runner: serving") > served_before
    return {"wall_s": wall, "summaries": [json.loads(out.stdout)], "served": served,
            "model_sha": {str(k): v for k, v in shas.items()}}


def keel_cli(env: dict[str, str], cwd: Path, *argv: str) -> str:
    """A keel command, untimed (the long-lived server's start and stop)."""
    out = subprocess.run([sys.executable, "-m", "keel", *argv], env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"keel {' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return out.stdout


def run_warm(args: argparse.Namespace, work: Path, r: int, batches: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """With a long-lived server (`keel server start`, untimed) in a fresh KEEL_HOME: `keel demo` on all months but
    the last, then `keel run` on the last month's batch alone, as a user adds a batch."""
    home = work / f"round{r}" / "warm" / ".keel"
    shutil.rmtree(home.parent, ignore_errors=True)
    (home / "demo" / "batches").mkdir(parents=True)
    for p in batches:
        os.link(p, home / "demo" / "batches" / p.name)
    env = child_env(home)
    keel_cli(env, home.parent, "server", "start")
    try:
        print(f"round {r + 1}: long-lived server: keel demo --months {args.months - 1} ...", end=" ", flush=True)
        warm = run_child("keel", work / f"warm{r}.json", env, home.parent, "--months", str(args.months - 1))
        print(f"{warm['wall_s']:.1f} s; keel run {batches[-1].name} ...", end=" ", flush=True)
        one = run_command(env, home.parent, "run", "--json", str(home / "demo" / "batches" / batches[-1].name),
                          "--config", str(home / "demo" / "keel.toml"))
        print(f"{one['wall_s']:.1f} s" + (" (keel's runner)" if one["served"] else ""), flush=True)
    finally:
        keel_cli(env, home.parent, "server", "stop")
    return warm, one


# --- the TUI's start-up beside a bare Textual app's ----------------------------------------------------------

TUI_CHILD = r"""
import asyncio, json, os, sys, time
spawned = float(os.environ["BENCH_SPAWNED"])
from keel.tui.app import KeelApp

async def main():
    app = KeelApp(None, refresh=0)
    async with app.run_test(size=(80, 24)) as pilot:
        while not getattr(app.screen, "loaded", False):
            await pilot.pause(0.005)
        await pilot.pause()
        print("BENCH " + json.dumps({"startup": time.time() - spawned}))

asyncio.run(main())
"""

BARE_TUI_CHILD = r"""
import asyncio, json, os, sys, time
spawned = float(os.environ["BENCH_SPAWNED"])
from textual.app import App
from textual.widgets import DataTable, Footer, Static

class Bare(App):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self):
        yield Static("runs")
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("run", "model", "batch", "status", "decision", "auc", "drifted", "started")
        table.add_rows([(f"{i:08d}", "model-01", f"batch-{i:06d}", "completed", "kept", "0.712", "2",
                         "2025-01-01 00:00") for i in range(100)])
        self.loaded = True

async def main():
    app = Bare()
    async with app.run_test(size=(80, 24)) as pilot:
        while not getattr(app, "loaded", False):
            await pilot.pause(0.005)
        await pilot.pause()
        print("BENCH " + json.dumps({"startup": time.time() - spawned}))

asyncio.run(main())
"""


def tui_child(code: str, home: Path, src: Path | None = None) -> float:
    env = child_env(home)
    if src is not None:  # another revision's keel in place of this snapshot
        env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(SRC), str(src), 1)
    env.update(TEXTUAL_ANIMATIONS="none", BENCH_SPAWNED=repr(time.time()))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=home.parent)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"the TUI start-up child failed:\n{out.stderr[-2000:]}")
    return float(json.loads(line[6:])["startup"])


def revision_source(work: Path, rev: str) -> Path:
    """keel's source at a git revision, laid out as installed (as snapshot() lays out the work tree)."""
    src = work / f"src-{rev}"
    shutil.rmtree(src, ignore_errors=True)
    tree = src / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "keel", "core", "flows", "tui", "cli"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"--tui-against {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    shutil.move(str(tree / "keel"), str(src / "keel"))
    for package in ("core", "flows", "tui", "cli"):
        shutil.move(str(tree / package), str(src / "keel" / package))
    shutil.rmtree(tree)
    return src


def tui_startup(work: Path, repeat: int, home: Path | None = None, against: str | None = None) -> dict[str, Any]:
    """keel's TUI on bench/tui.py's store (100k runs, 10k versions, 1M metric points) and a bare Textual app (a
    Static, a 100-row DataTable, a Footer), each from a fresh process to its first painted page, interleaved; with
    ``against``, keel's TUI at that git revision too, in the same rotation."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tui as tui_bench

    home = home.resolve() if home else work / "tui" / ".keel"
    saved = os.environ.get("KEEL_HOME")
    if (home / "keel.db").exists():
        print(f"TUI: reusing the store in {home}", flush=True)
    else:
        print("TUI: building the 100k-run store (untimed) ...", flush=True)
        try:
            tui_bench.build(home, 100_000, 10_000, 1_000_000)
        finally:
            if saved is None:
                os.environ.pop("KEEL_HOME", None)
            else:
                os.environ["KEEL_HOME"] = saved
    other = revision_source(work, against) if against else None
    for src in (SRC, other):  # compiled up front, so that no timed start-up compiles keel's modules
        if src is not None:
            compileall.compile_dir(str(src), quiet=1)
    bare: list[float] = []
    keel: list[float] = []
    then: list[float] = []
    for _ in range(repeat):
        bare.append(tui_child(BARE_TUI_CHILD, home))
        if other is not None:
            then.append(tui_child(TUI_CHILD, home, other))
        keel.append(tui_child(TUI_CHILD, home))
    line = ", ".join
    print(f"TUI start-up: bare {line(f'{v:.2f}' for v in bare)} s; keel {line(f'{v:.2f}' for v in keel)} s"
          + (f"; keel at {against} {line(f'{v:.2f}' for v in then)} s" if then else ""), flush=True)
    return {"bare": bare, "keel": keel} | ({"against": against, "keel_against": then} if then else {})


def train_s(r: dict[str, Any], side: str) -> float:
    """LightGBM training time of one side: its wall time swings with machine load (OpenMP spin-waits)."""
    if side == "bare":
        return r["bare"]["phases"].get("train (lightgbm)", 0.0)
    return timer(r["cold"], "compute: lightgbm train")


def report_rounds(results: dict[str, Any]) -> None:
    rounds = results["rounds"]
    col = lambda f: [f(r) for r in rounds]  # noqa: E731
    med = lambda xs: statistics.median(xs)  # noqa: E731
    rows = []

    def add(name: str, values: list[float], fmt: str) -> None:
        cells = [fmt.format(v) for v in values]
        rows.append([name, *cells, fmt.format(med(values)) if len(values) > 1 else ""])

    add("keel cold, wall (s)", col(lambda r: r["cold"]["wall_s"]), "{:.1f}")
    add("keel cached rerun, wall (s)", col(lambda r: r["rerun"]["wall_s"]), "{:.1f}")
    add("bare script, wall (s)", col(lambda r: r["bare"]["wall_s"]), "{:.1f}")
    add("keel / bare, wall (goal < 1.3)", col(lambda r: r["cold"]["wall_s"] / r["bare"]["wall_s"]), "{:.2f}")
    add("rerun / cold, wall (goal < 10%)", col(lambda r: r["rerun"]["wall_s"] / r["cold"]["wall_s"] * 100), "{:.1f}%")
    add("keel cold, CPU (s, incl. server)", col(lambda r: r["cold"]["cpu_s"]), "{:.1f}")
    add("bare script, CPU (s)", col(lambda r: r["bare"]["cpu_s"]), "{:.1f}")
    add("keel / bare, CPU", col(lambda r: r["cold"]["cpu_s"] / r["bare"]["cpu_s"]), "{:.2f}")
    add("Prefect server start, cold (s)", col(lambda r: timer(r["cold"], "prefect: server start")), "{:.1f}")
    add("Prefect server start, rerun (s)", col(lambda r: timer(r["rerun"], "prefect: server start")), "{:.1f}")
    add("LightGBM training: keel (s)", col(lambda r: train_s(r, "cold")), "{:.1f}")
    add("LightGBM training: bare (s)", col(lambda r: train_s(r, "bare")), "{:.1f}")
    add("keel / bare, wall without training", col(
        lambda r: (r["cold"]["wall_s"] - train_s(r, "cold")) / (r["bare"]["wall_s"] - train_s(r, "bare"))), "{:.2f}")
    add("keel - bare, wall without training (s)", col(
        lambda r: r["cold"]["wall_s"] - train_s(r, "cold") - r["bare"]["wall_s"] + train_s(r, "bare")), "{:.1f}")
    n = len(rounds[0]["warm"]["summaries"])
    add(f"long-lived server: keel demo, {n} months, wall (s)", col(lambda r: r["warm"]["wall_s"]), "{:.1f}")
    add(f"floor: bare script's first {n} months, wall (s)", col(floor_warm), "{:.1f}")
    add("  keel / floor, wall", col(lambda r: r["warm"]["wall_s"] / floor_warm(r)), "{:.2f}")
    # per batch from the third month on: keel's first two flow calls carry one-time imports (Prefect's client and
    # engine, LightGBM, Alibi Detect on the first drift test) that the bare script pays in its imports phase
    add(f"  per batch, months 3-{n}: keel flow call, median (s)",
        col(lambda r: med([c["wall_s"] for c in r["warm"]["calls"][2:]])), "{:.2f}")
    add(f"  per batch, months 3-{n}: bare month, median (s)",
        col(lambda r: med([m["wall_s"] for m in r["bare"]["months"][2:n]])), "{:.2f}")
    add(f"  per batch, months 3-{n}: keel over floor, summed (goal < 10%)", col(lambda r: (
        sum(c["wall_s"] for c in r["warm"]["calls"][2:]) / sum(m["wall_s"] for m in r["bare"]["months"][2:n]) - 1)
        * 100), "{:.1f}%")
    add(f"  per batch, months 3-{n}: Prefect outside the flow body, median (s)",
        col(lambda r: med([c["wall_s"] - c["body_s"] for c in r["warm"]["calls"][2:]])), "{:.2f}")
    add("long-lived server: keel run, one batch, wall (s)", col(lambda r: r["one"]["wall_s"]), "{:.1f}")
    add("floor: bare script on that batch alone, wall (s)", col(floor_one), "{:.1f}")
    add("  keel run - floor (goal <= 1 s)", col(lambda r: r["one"]["wall_s"] - floor_one(r)), "{:+.1f}")
    add("  keel run served by keel's runner", col(lambda r: 1.0 if r["one"]["served"] else 0.0), "{:.0f}")
    add("  floor: interpreter + imports (s)", col(lambda r: r["bare"]["startup_s"] + r["bare"]["phases"]["imports"]),
        "{:.1f}")
    add("  floor: that month's work (s)", col(lambda r: r["bare"]["months"][-1]["wall_s"]), "{:.2f}")
    header = ["", *[f"round {i + 1}" for i in range(len(rounds))], "median" if len(rounds) > 1 else ""]
    print()
    print(fmt_table(header, rows))
    for i, r in enumerate(rounds):
        ok = "the same" if not r["verify_warm"] else "; ".join(r["verify_warm"])
        print(f"round {i + 1}: long-lived server's demo + keel run vs the bare script: {ok}")
    for i, r in enumerate(rounds):
        ok = "same quarantined rows, metrics, drifted features and model SHA-256s" if not r["verify"] else "; ".join(r["verify"])
        trainings = sum(1 for s in r["cold"]["summaries"] if s.get("model_version"))
        print(f"\nround {i + 1}: bare vs keel ({trainings} trainings each): {ok}")
        print(f"round {i + 1}: imported by the cold run: {', '.join(r['cold']['imported'])}; by the rerun: "
              f"{', '.join(r['rerun']['imported']) or 'none of them'}")
        print(f"round {i + 1}: rerun changed the store: {', '.join(r['store_changed']) or 'no'}; "
              "replayed stages [completed, cache hits]: " + json.dumps(r["replay_cache"], sort_keys=True))

    last = rounds[-1]
    cold = last["cold"]
    print(f"\nwhere keel's cold wall time goes (round {len(rounds)}, {cold['wall_s']:.1f} s):")
    print(fmt_table(["part", "s", "share"], [[k, f"{v:.2f}", f"{v / cold['wall_s']:.0%}"] for k, v in breakdown(cold)]))
    calls = [c["wall_s"] for c in cold["calls"]]
    bodies = cold["timers"]["flow: body"]
    print(f"\nflow calls: first {calls[0]:.2f} s (server start {timer(cold, 'prefect: server start'):.2f} s inside), "
          f"then median {med(calls[1:]):.2f} s; Prefect outside the flow body: "
          f"{(cold['timers']['flow: call']['incl_s'] - bodies['incl_s'] - timer(cold, 'prefect: server start')) / len(calls):.2f} s per flow run")
    print(fmt_table(["stage (task)", "calls", "wall s", "Prefect around core s"],
                    [[n, c, f"{w:.2f}", f"{o:.2f}"] for n, c, w, o in per_task(cold)]))
    print(f"\nwhere the cached rerun goes (round {len(rounds)}, {last['rerun']['wall_s']:.1f} s):")
    rb = breakdown(last["rerun"])
    print(fmt_table(["part", "s"], [[k, f"{v:.2f}"] for k, v in rb if abs(v) >= 0.05]))
    warm = last["warm"]
    print(f"\nwhere keel demo with the long-lived server goes (round {len(rounds)}, {warm['wall_s']:.1f} s):")
    print(fmt_table(["part", "s"], [[k, f"{v:.2f}"] for k, v in breakdown(warm) if abs(v) >= 0.02]))
    # keel run is timed as the plain command (spawn to exit; keel's runner runs it when it is up): no timers inside
    print(fmt_table(["stage (task), long-lived server", "calls", "wall s", "Prefect around core s"],
                    [[n, c, f"{w:.2f}", f"{o:.2f}"] for n, c, w, o in per_task(warm)]))
    print("\nbare script phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in last["bare"]["phases"].items()))
    print("\nkeel timers, cold (calls, inclusive s, exclusive s):")
    print(fmt_table(["label", "calls", "incl", "excl"],
                    [[k, v["calls"], f"{v['incl_s']:.2f}", f"{v['excl_s']:.2f}"] for k, v in cold["timers"].items()]))


def floor_warm(r: dict[str, Any]) -> float:
    """The bare script without its last month: process, imports and the first months' work."""
    return float(r["bare"]["wall_s"] - r["bare"]["months"][-1]["wall_s"])


def floor_one(r: dict[str, Any]) -> float:
    """The bare script on the last month alone: process, imports (Alibi Detect's included) and that month's work.
    It keeps the production model and its reference data in memory, where `keel run` reads them from the store."""
    return float(r["bare"]["wall_s"] - sum(m["wall_s"] for m in r["bare"]["months"][:-1]))


def report(results: dict[str, Any]) -> None:
    if results["rounds"]:
        report_rounds(results)
    if "tui" in results:
        bare, keel = results["tui"]["bare"], results["tui"]["keel"]
        mb, mk = statistics.median(bare), statistics.median(keel)
        print(f"\nTUI start-up to the first painted page, fresh process, 80x24, median of {len(keel)} interleaved:")
        print(fmt_table(["", "median", "min", "max"], [
            ["bare Textual app (Static, 100-row DataTable, Footer)", f"{mb:.2f} s", f"{min(bare):.2f} s", f"{max(bare):.2f} s"],
            ["keel tui on 100k runs / 10k versions / 1M points", f"{mk:.2f} s", f"{min(keel):.2f} s", f"{max(keel):.2f} s"],
            ["keel / bare (goal <= 1.5)", f"{mk / mb:.2f}", "", ""],
        ]))
        if results["tui"].get("keel_against"):
            then, rev = results["tui"]["keel_against"], results["tui"]["against"]
            mt = statistics.median(then)
            print(f"keel tui at {rev}: median {mt:.2f} s ({min(then):.2f}-{max(then):.2f}), {mt / mb:.2f}x the bare app")
    if "probe" in results:
        p = results["probe"]
        print("\nPrefect probe (keel's Prefect settings, fresh PREFECT_HOME):")
        print(fmt_table(["measure", "value"], [
            ["import prefect", f"{p['import_prefect_s']:.2f} s"],
            ["temporary server start, fresh home (migrations)", f"{p['server_start_fresh_s']:.2f} s"],
            ["temporary server start, migrated home", f"{p['server_start_migrated_s']:.2f} s"],
            ["import alibi_detect TabularDrift", f"{p['import_alibi_s']:.2f} s"],
            ["first flow run (empty)", f"{p['first_flow_s']:.2f} s"],
            ["flow run (empty), median of 5", f"{p['flow_s']:.3f} s"],
            ["flow run (empty), heartbeat off, median of 5", f"{p['flow_no_heartbeat_s']:.3f} s"],
            ["task, default (result persisted)", f"{p['task_plain_ms']:.1f} ms"],
            ["task, persist_result=False", f"{p['task_unpersisted_ms']:.1f} ms"],
            ["task, INPUTS+TASK_SOURCE cache miss + persist", f"{p['task_cached_ms']:.1f} ms"],
            ["task, INPUTS+TASK_SOURCE cache hit", f"{p['task_cached_hit_ms']:.1f} ms"],
            ["3 cached tasks with 28k-float array in/out + 700 KB text, miss", f"{p['large_miss_s']:.2f} s"],
            ["the same, hit", f"{p['large_hit_s']:.2f} s"],
            ["6 flows of 10 tasks back to back, heartbeat off (s)", " ".join(map(str, p["back_to_back_no_heartbeat_s"]))],
            ["client retries after HTTP 503 (SQLite locked), back-off", f"{p['retries'][0]}, {p['retries'][1]:.1f} s"],
            ["probe wall / CPU", f"{p['wall_s']:.1f} s / {p['cpu_s']:.1f} s"],
        ]))


if __name__ == "__main__":
    main()

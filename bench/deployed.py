"""Benchmark: two models' twelve demo months through keel deployed, with one and with two workers, beside the
embedded default on the same batches, in one invocation.

- *embedded default*: one process runs the flow in-process as `keel demo` does (`keel.cli.pipeline._run_flow`:
  Prefect's temporary server, the SQLite store), model A's twelve months then model B's, on a fresh KEEL_HOME.
- *deployed, N workers*: tests/deployed_world.py's set-up, fresh for each N: `prefect server start` on a new
  PostgreSQL database, the `keel-process` pool, `prefect --no-prompt deploy --all` of the real prefect.yaml
  from a clean copy of the repository, N `prefect worker start --limit 1` processes (a worker runs one flow
  run at a time; without a limit a single worker runs every model in parallel), the store on another new
  PostgreSQL database. Both models' batches are dropped into their inbox folders and the driver starts an
  inbox scan (`scan_inbox/inbox`) for a model whenever nothing of that model is scheduled or running, until
  all batches are done. Wall time runs from the first scan to the last completion (Prefect's end time).

Model A is the demo's (`DEMO_CONFIG`, keel.toml, incoming/); model B is the same configuration under
`model = "flights-delay-b"` with `[retrain] seed = 7` (keel-b.toml, incoming-b/). B's scans are runs of the same
inbox deployment with its parameters overridden, the request `prefect deployment run scan_inbox/inbox
-p config=keel-b.toml -p inbox=incoming-b` makes; the driver sends it over Prefect's REST API rather than the
CLI, whose interpreter would take a core for seconds each time. The inbox's one-minute schedule stays as
deployed (it scans model A). Outcomes (dataset version, decision, model version and SHA-256, production
version per model and batch) are read from every store and compared with the embedded default's.

The harness lives in tests/ (shared with tests/deploy/test_deployed.py) and tests/ is no package: its folder
is put on sys.path. Workers, server, flow-run processes and databases are removed on exit, Ctrl-C and SIGTERM.

Run:  KEEL_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/test \\
      .venv/bin/python bench/deployed.py [--workers 1,2] [--worker-limit 1] [--query-seconds S] [--months 12]
      [--keep DIR] [--json FILE]
Figures, machine and method (recorded 2026-11-30, about 20 minutes a run): bench/README.md, "## Deployed".
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the harness: tests/deployed_world.py, tests/postgres_db.py

MODEL_A, MODEL_B = "flights-delay", "flights-delay-b"
FILES = {MODEL_A: ("keel.toml", "incoming"), MODEL_B: ("keel-b.toml", "incoming-b")}
ACTIVE = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]


def configs() -> dict[str, str]:
    from keel.core.data.demo import DEMO_CONFIG

    b = DEMO_CONFIG.replace(f'model = "{MODEL_A}"', f'model = "{MODEL_B}"').replace("[retrain]\n", "[retrain]\nseed = 7\n")
    assert b.count(MODEL_B) == 1 and "seed = 7" in b
    return {MODEL_A: DEMO_CONFIG, MODEL_B: b}


# --- processes and CPU, from /proc -------------------------------------------------------------------------


def _stat() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent, start tick, CPU seconds of itself and its waited-for children)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry)] = (int(fields[1]), int(fields[19]), sum(int(f) for f in fields[11:15]) / tick)
    return out


def tree(roots: list[int]) -> dict[int, tuple[int, float]]:
    """The processes started from `roots`, with their start tick and CPU seconds."""
    stat, found, todo = _stat(), {}, list(roots)
    while todo:
        pid = todo.pop()
        if pid in stat and pid not in found:
            found[pid] = stat[pid][1:]
            todo += [p for p, s in stat.items() if s[0] == pid]
    return found


def kill_left(snapshot: dict[int, tuple[int, float]]) -> None:
    """SIGKILL every process of an earlier `tree` that still runs (same pid, same start tick)."""
    now = _stat()
    for pid, (start, _) in snapshot.items():
        if pid in now and now[pid][1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def busy_cores() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / tick, sum(values) / tick


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


# --- the stores ---------------------------------------------------------------------------------------------


def outcomes(db_url: str) -> dict[str, list[dict[str, Any]]]:
    """Per model, its finished runs in order: batch, dataset version, decision, model version and SHA-256,
    production version, and the flow body's seconds (the store's started_at to finished_at)."""
    from sqlalchemy import create_engine
    from sqlmodel import Session, col, select

    from keel.core.store.models import ModelVersion, PipelineRun

    engine = create_engine(db_url)
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        with Session(engine) as session:
            runs = session.exec(select(PipelineRun).where(PipelineRun.flow == "run_pipeline", col(
                PipelineRun.status).in_(("completed", "quarantined"))).order_by(col(PipelineRun.started_at))).all()
            for r in runs:
                s = r.summary or {}
                sha = session.exec(select(ModelVersion.artifact_sha256).where(
                    ModelVersion.model_name == r.model_name, ModelVersion.version == s.get("model_version"))).first()
                out.setdefault(r.model_name, []).append({
                    "batch": Path(r.source or "").name, "dataset": r.batch_id, "decision": r.decision,
                    "model_version": s.get("model_version"), "model_sha256": sha,
                    "production": s.get("production_version"),
                    "body_s": (r.finished_at - r.started_at).total_seconds() if r.finished_at else None})
    finally:
        engine.dispose()
    return out


def stage_seconds(db_url: str) -> dict[str, float]:
    """Seconds per pipeline stage (the store's stage_run), summed over every finished run."""
    from sqlalchemy import create_engine, func
    from sqlmodel import Session, col, select

    from keel.core.store.models import PipelineRun, StageRun

    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(StageRun.name, func.sum(StageRun.duration_ms)).join(
                PipelineRun, col(PipelineRun.id) == col(StageRun.run_id)).where(
                PipelineRun.flow == "run_pipeline").group_by(StageRun.name)).all()
    finally:
        engine.dispose()
    return {name: ms / 1000 for name, ms in rows}


def differences(expected: dict[str, list[dict[str, Any]]], got: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys = ("batch", "dataset", "decision", "model_version", "model_sha256", "production")
    problems = []
    for model in sorted(set(expected) | set(got)):
        a = [{k: o[k] for k in keys} for o in expected.get(model, [])]
        b = [{k: o[k] for k in keys} for o in got.get(model, [])]
        if len(a) != len(b):
            problems.append(f"{model}: {len(b)} finished runs, embedded {len(a)}")
        problems += [f"{model} {x['batch']}: {y} (embedded {x})" for x, y in zip(a, b, strict=False) if x != y]
    return problems


# --- the embedded default -------------------------------------------------------------------------------------


def embedded_child(out: Path, batches: list[str]) -> None:
    """In the child: every batch of model A, then of model B, as `keel demo` runs a month."""
    begun = time.time()
    from keel.cli.pipeline import _run_flow

    runs = []
    for model, (config, _) in FILES.items():
        for batch in batches:
            start = time.time()
            summary = _run_flow(batch, config)
            runs.append({"model": model, "batch": batch, "start": start, "end": time.time(),
                         "decision": summary["decision"]})
    out.write_text(json.dumps({"begun": begun, "runs": runs}))
    atexit._run_exitfuncs()  # as the keel command leaves: Prefect's server stops, no interpreter teardown
    os._exit(0)


def run_embedded(work: Path, batches: list[Path], cleanup: ExitStack) -> dict[str, Any]:
    folder = work / "embedded"
    folder.mkdir()
    for model, text in configs().items():
        (folder / FILES[model][0]).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["KEEL_HOME"] = str(folder / "home")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--embedded-child", str(folder / "out.json"),
           *map(str, batches)]
    load_before, (busy0, all0) = load(), busy_cores()
    start = time.time()
    with (folder / "child.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        cleanup.callback(lambda: proc.poll() is None and kill_left(tree([proc.pid])))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    busy1, all1 = busy_cores()
    if proc.returncode != 0:
        sys.exit(f"the embedded run failed; see {folder / 'child.log'}:\n{(folder / 'child.log').read_text()[-3000:]}")
    child = json.loads((folder / "out.json").read_text())
    runs = child["runs"]
    return {"wall_s": wall, "span_s": runs[-1]["end"] - runs[0]["start"], "startup_s": runs[0]["start"] - start,
            "cpu_s": usage.ru_utime + usage.ru_stime, "run_s": [r["end"] - r["start"] for r in runs],
            "busy_cores": (busy1 - busy0) / (all1 - all0) * os.cpu_count(), "load": [load_before, load()],
            "outcomes": outcomes(f"sqlite:///{folder / 'home' / 'keel.db'}"),
            "stages": stage_seconds(f"sqlite:///{folder / 'home' / 'keel.db'}")}


# --- the deployed set-up ----------------------------------------------------------------------------------------


class Api:
    """The few Prefect REST calls the driver needs (no Prefect import in the driver); it retries what Prefect's
    own client retries (429, 502, 503, transport errors) and counts those answers."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http, self.transport_error, self.retried = httpx.Client(base_url=url, timeout=30), httpx.TransportError, 0

    def call(self, method: str, url: str, **kw: Any) -> Any:
        for attempt in range(6):
            try:
                response = self.http.request(method, url, **kw)
                if response.status_code not in (429, 502, 503) or attempt == 5:
                    return response.raise_for_status().json()
            except self.transport_error:
                if attempt == 5:
                    raise
            self.retried += 1
            time.sleep(min(2**attempt, 10))

    def deployment(self, name: str) -> str:
        return self.call("GET", f"/deployments/name/{name}")["id"]

    def start(self, deployment: str, parameters: dict[str, Any]) -> str:
        return self.call("POST", f"/deployments/{deployment}/create_flow_run", json={"parameters": parameters})["id"]

    def runs(self, deployment: str, due: bool = False) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"deployment_id": {"any_": [deployment]}}
        if due:  # the schedule keeps an hour of future scans: only those due by now
            flt["expected_start_time"] = {"before_": datetime.now().astimezone().isoformat()}
        return self.call("POST", "/flow_runs/filter", json={"flow_runs": flt, "limit": 200,
                                                            "sort": "EXPECTED_START_TIME_ASC"})

    def states(self, run: str) -> list[dict[str, Any]]:
        return self.call("GET", "/flow_run_states/", params={"flow_run_id": run})

    def workers_online(self) -> int:
        workers = self.call("POST", "/work_pools/keel-process/workers/filter", json={})
        return sum(w.get("status") == "ONLINE" for w in workers)


def _model_of(run: dict[str, Any]) -> str | None:
    tags = [t.split(":", 1)[1] for t in run["tags"] if t.startswith("keel-model:")]
    if tags:
        return tags[0]
    config = run["parameters"].get("config")
    return next((m for m, (c, _) in FILES.items() if c == config), None)


def run_deployed(work: Path, batches: list[Path], workers: int, limit: int, query: float | None, timeout: float,
                 cleanup: ExitStack) -> dict[str, Any]:
    import postgres_db
    from deployed_world import Deployment, make_project

    class Bench(Deployment):
        def start_worker(self, name: str) -> None:  # the harness's, with --limit and the poll interval
            env = {**self.env, "PREFECT_WORKER_QUERY_SECONDS": str(query)} if query else self.env
            self.procs[name] = self._spawn(name, [str(self.bin / "prefect"), "worker", "start", "--pool",
                                                  "keel-process", "--name", name]
                                           + (["--limit", str(limit)] if limit else []), env, cwd=self.root)

    root = work / f"deployed-{workers}"
    root.mkdir()
    prefect_db = cleanup.enter_context(postgres_db.fresh_database("keel_bench_prefect", "postgresql+asyncpg"))
    store_db = cleanup.enter_context(postgres_db.fresh_database("keel_bench_store"))
    cfg = configs()
    project = make_project(root, cfg[MODEL_A])
    (project / FILES[MODEL_B][0]).write_text(cfg[MODEL_B])
    d = Bench(root, prefect_db, store_db)

    def stop() -> None:
        left = tree([p.pid for p in d.procs.values() if p.poll() is None])  # flow runs have sessions of their own
        d.stop()
        kill_left(left)

    cleanup.callback(stop)
    setup = time.time()
    d.start_server()
    d.prefect("work-pool", "create", "keel-process", "--type", "process")
    d.prefect("--no-prompt", "deploy", "--all")
    for i in range(workers):
        d.start_worker(f"w{i + 1}")
    api = Api(d.api)
    inbox, pipeline = api.deployment("scan_inbox/inbox"), api.deployment("run_pipeline/run-pipeline")
    while api.workers_online() < workers or any(r["state_type"] in ("PENDING", "RUNNING") for r in api.runs(inbox, True)):
        if time.time() - setup > 300:
            raise RuntimeError("the workers did not come online: " + d.log("w1")[-2000:])
        time.sleep(1)
    setup = time.time() - setup
    for _, folder in FILES.values():  # all batches at once: a staged folder renamed into place
        staged = project / f".staged-{folder}"
        staged.mkdir()
        for b in batches:
            shutil.copy2(b, staged / b.name)
    print(f"  set-up {setup:.0f} s; load {load()}", flush=True)

    load_before, (busy0, all0) = load(), busy_cores()
    cpu0 = {name: tree([p.pid]) for name, p in d.procs.items()}
    t0 = time.time()
    for _, folder in FILES.values():
        os.replace(project / f".staged-{folder}", project / folder)  # incoming/ is empty: replaced at once
    mine: set[str] = set()
    total = len(batches) * len(FILES)
    while True:
        scans = api.runs(inbox, due=True)  # scans first: a scan that ended has created its run already
        runs = api.runs(pipeline)
        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        if len(done) >= total:
            break
        if time.time() - t0 > timeout:
            raise RuntimeError(f"{len(done)} of {total} batches done after {timeout:.0f} s: "
                               + json.dumps([(r["name"], r["state_name"]) for r in runs]) + d.log("w1")[-2000:])
        for model, (config, folder) in FILES.items():
            busy = [r for r in scans + runs if r["state_type"] in ACTIVE and _model_of(r) == model]
            if not busy and sum(_model_of(r) == model for r in done) < len(batches):
                mine.add(api.start(inbox, {"config": config, "inbox": folder}))
        time.sleep(1)
    busy1, all1 = busy_cores()
    cpu1 = {name: tree([p.pid]) for name, p in d.procs.items()}
    cpu = {name: sum(c for _, c in cpu1[name].values()) - sum(c for _, c in cpu0[name].values()) for name in cpu1}
    end = max(ts(r["end_time"]) or 0 for r in done)

    timings = []
    for r in sorted(done, key=lambda r: ts(r["created"]) or 0):
        states = {s["type"]: ts(s["timestamp"]) for s in api.states(r["id"])}
        timings.append({"model": _model_of(r), "created": ts(r["created"]),
                        "pending": states.get("PENDING") or ts(r["created"]),
                        "start": ts(r["start_time"]), "end": ts(r["end_time"])})
    scans = [r for r in api.runs(inbox, due=True) if r["state_type"] == "COMPLETED" and (ts(r["end_time"]) or 0) > t0]
    failed = [f"{r['name']} ({_model_of(r)}, {r['state_type'].lower()}: {(r['state'] or {}).get('message', '')[:400]})"
              for r in runs if r["state_type"] in ("FAILED", "CRASHED", "CANCELLED")]
    return {"workers": workers, "limit": limit, "query_s": query, "setup_s": setup, "wall_s": end - t0, "t0": t0, "cpu_s": cpu,
            "busy_cores": (busy1 - busy0) / (all1 - all0) * os.cpu_count(), "load": [load_before, load()],
            "api_retries": api.retried, "runs": timings, "failed": failed, "scans": {
                "driver": sum(r["id"] in mine for r in scans), "schedule": sum(r["id"] not in mine for r in scans),
                "run_s": [(ts(r["end_time"]) or 0) - (ts(r["created"]) or 0) for r in scans]},
            "outcomes": outcomes(store_db), "stages": stage_seconds(store_db)}


# --- the report ---------------------------------------------------------------------------------------------


def per_batch(result: dict[str, Any]) -> dict[str, float]:
    """Medians per batch of a deployed configuration, and the time both models had a run going."""
    runs = result["runs"]
    gaps = []
    for model in FILES:
        mine = [r for r in runs if r["model"] == model]
        gaps += [b["created"] - a["end"] for a, b in zip([{"end": result["t0"]}, *mine], mine, strict=False)]
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    both, going, last = 0.0, 0, 0.0
    for when, step in edges:
        if going >= 2:
            both += when - last
        going, last = going + step, when
    med = statistics.median
    return {"run": med(r["end"] - r["start"] for r in runs), "pickup": med(r["pending"] - r["created"] for r in runs),
            "boot": med(r["start"] - r["pending"] for r in runs), "gap": med(gaps), "both": both / result["wall_s"]}


def fmt_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: dict[str, Any]) -> None:
    emb, deployed = results["embedded"], results["deployed"]
    n = sum(len(v) for v in emb["outcomes"].values())
    bpm = lambda wall: n / wall * 60  # noqa: E731
    rows = [["embedded, the whole command (imports, temporary server, runs)", f"{emb['wall_s']:.1f}",
             f"{bpm(emb['wall_s']):.2f}", "", ""],
            ["embedded, the runs (first start to last end)", f"{emb['span_s']:.1f}", f"{bpm(emb['span_s']):.2f}",
             "1.00", "0.0"]]
    for d in deployed:
        rows.append([f"deployed, {d['workers']} worker{'s' if d['workers'] > 1 else ''}", f"{d['wall_s']:.1f}",
                     f"{bpm(d['wall_s']):.2f}", f"{emb['span_s'] / d['wall_s']:.2f}",
                     f"{(d['wall_s'] - emb['span_s']) / n:.1f}"])
    print(f"\n{n} batches ({len(FILES)} models x {n // len(FILES)} months); wall = first scan to last completion "
          "(deployed)")
    print(fmt_table(["", "wall s", "batches/min", "x embedded", "overhead s/batch"], rows))
    for d in deployed:
        print(f"deployed, {d['workers']} worker(s): "
              + (f"each `--limit {d['limit']}`" if d["limit"] else "no --limit (Prefect's default)")
              + f", polling every {d['query_s'] or 10:g} s" + ("" if d["query_s"] else " (Prefect's default)"))
    one = next((d for d in deployed if d["workers"] == 1), None)
    two = next((d for d in deployed if d["workers"] == 2), None)
    if one and two:
        print(f"scaling, two workers / one worker (batches/min): {one['wall_s'] / two['wall_s']:.2f}")

    med = statistics.median
    stats = [per_batch(d) for d in deployed]
    body = lambda o: med(x["body_s"] for v in o.values() for x in v)  # noqa: E731
    col = lambda f, e="": [e, *[f(d, s) for d, s in zip(deployed, stats, strict=True)]]  # noqa: E731
    rows = [
        ["flow body (store: started_at to finished_at), median s", f"{body(emb['outcomes']):.1f}",
         *[f"{body(d['outcomes']):.1f}" for d in deployed]],
        ["flow run (embedded: the call; deployed: Running to Completed), median s", f"{med(emb['run_s']):.1f}",
         *col(lambda d, s: f"{s['run']:.1f}")[1:]],
        ["created to Pending (a worker takes the run), median s", *col(lambda d, s: f"{s['pickup']:.1f}", "-")],
        ["Pending to Running (process, imports, flow loaded), median s", *col(lambda d, s: f"{s['boot']:.1f}", "-")],
        ["model's previous run ended to next created (driver, scan), median s",
         *col(lambda d, s: f"{s['gap']:.1f}", "-")],
        ["inbox scans run: driver / schedule", *col(lambda d, s: f"{d['scans']['driver']} / {d['scans']['schedule']}", "-")],
        ["inbox scan, created to Completed, median s", *col(lambda d, s: f"{med(d['scans']['run_s']):.1f}", "-")],
        ["share of the wall with both models' runs going", *col(lambda d, s: f"{s['both']:.0%}", "-")],
        ["CPU of keel's processes, s (deployed: server + workers with their flow runs)", f"{emb['cpu_s']:.0f}",
         *col(lambda d, s: f"{sum(d['cpu_s'].values()):.0f} ({d['cpu_s']['server']:.0f} + "
              f"{sum(d['cpu_s'].values()) - d['cpu_s']['server']:.0f})")[1:]],
        ["machine busy cores over the wall (of 2, others' work included)", f"{emb['busy_cores']:.2f}",
         *col(lambda d, s: f"{d['busy_cores']:.2f}")[1:]],
        ["load average before / after (1, 5, 15 min)", " / ".join(emb["load"]), *col(lambda d, s: " / ".join(d["load"]))[1:]],
    ]
    names = sorted({k for r in [emb, *deployed] for k in r["stages"]}, key=lambda k: -emb["stages"].get(k, 0))
    bodies = [sum(x["body_s"] for v in r["outcomes"].values() for x in v) for r in [emb, *deployed]]
    rows.append(["flow bodies, total s: in the stages / outside them (store writes, glue)",
                 *[f"{sum(r['stages'].values()):.1f} / {b - sum(r['stages'].values()):.1f}"
                   for r, b in zip([emb, *deployed], bodies, strict=True)]])
    rows += [[f"  stage {k}, total s", *[f"{r['stages'].get(k, 0):.1f}" for r in [emb, *deployed]]] for k in names]
    print()
    print(fmt_table(["per batch and machine", "embedded", *[f"{d['workers']} worker(s)" for d in deployed]], rows))
    for d in deployed:
        problems = differences(emb["outcomes"], d["outcomes"])
        order = all([o["batch"] for o in v] == sorted(o["batch"] for o in v) for v in d["outcomes"].values())
        runs = {m: sorted((r for r in d["runs"] if r["model"] == m), key=lambda r: r["start"]) for m in FILES}
        order = order and all(a["end"] <= b["start"] for v in runs.values() for a, b in zip(v, v[1:], strict=False))
        print(f"\n{d['workers']} worker(s): " + ("same dataset versions, decisions, model versions and SHA-256s, "
              "and production versions as the embedded default" if not problems else "DIFFERENT: " + "; ".join(problems))
              + f"; each model's batches in batch order, one at a time: {'yes' if order else 'NO'}; failed or crashed runs: "
              + (", ".join(d["failed"]) or "none") + f"; the driver's API calls retried {d['api_retries']} times; set-up (server, deploy, workers) {d['setup_s']:.0f} s")
    decisions = {m: [o["decision"] for o in v] for m, v in emb["outcomes"].items()}
    print("decisions (embedded): " + "; ".join(f"{m}: {' '.join(v)}" for m, v in decisions.items()))


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def guarded(fn: Any, *args: Any) -> Any:
    """fn(*args, cleanup): what fn starts it registers on `cleanup`, which runs however fn ends, and is
    itself not interrupted by a second signal."""
    cleanup = ExitStack()
    try:
        return fn(*args, cleanup)
    finally:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        try:
            cleanup.close()
        finally:
            for sig in SIGNALS:
                signal.signal(sig, interrupted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to run, in order (default 1,2)")
    parser.add_argument("--worker-limit", type=int, default=1, help="flow runs per worker at once (0: no limit)")
    parser.add_argument("--query-seconds", type=float, help="workers' poll interval (default: Prefect's, 10 s)")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per deployed configuration")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--embedded-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.embedded_child:
        embedded_child(Path(args.embedded_child[0]), args.embedded_child[1:])
        return
    if not os.environ.get("KEEL_TEST_POSTGRES_URL"):
        sys.exit("set KEEL_TEST_POSTGRES_URL (e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test): the deployed "
                 "set-up makes its databases there")

    for sig in SIGNALS:  # SIGINT too: a job started in the background ignores it otherwise
        signal.signal(sig, interrupted)
    work = args.keep or Path(tempfile.mkdtemp(prefix="keel-bench-deployed-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"uptime": [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]}
    try:
        from keel.core.data.demo import write_batches

        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
        print(f"keel {rev}; {os.cpu_count()} cores; {results['uptime'][0]}", flush=True)
        batches = write_batches(work / "batches", args.months)
        print(f"embedded default, {2 * len(batches)} batches ...", flush=True)
        results["embedded"] = guarded(run_embedded, work, batches)
        print(f"  {results['embedded']['wall_s']:.1f} s", flush=True)
        results["deployed"] = []
        for workers in map(int, args.workers.split(",")):
            print(f"deployed, {workers} worker(s) ...", flush=True)
            results["deployed"].append(guarded(run_deployed, work, batches, workers, args.worker_limit,
                                               args.query_seconds, args.timeout))
            print(f"  {results['deployed'][-1]['wall_s']:.1f} s", flush=True)
        results["uptime"].append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        report(results)
        print(f"\nuptime before: {results['uptime'][0]}\nuptime after:  {results['uptime'][1]}")
    except KeyboardInterrupt as exc:
        sys.exit(f"interrupted ({exc or 'Ctrl-C'}): workers, server, flow runs and databases removed")
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Profile keel's demo with py-spy: where the wall time of the keel process goes, and the server's CPU.

Runs the same keel subprocess as bench/pipeline.py (cold on a fresh KEEL_HOME, then the cached
rerun) under `py-spy record --idle --threads --subprocesses`, and sorts every sample of keel's main
thread into one category by what is on its stack (first rule that matches, most specific first).
Samples of Prefect's temporary server (a uvicorn subprocess) are counted apart: busy ones compete
with keel for the two cores, idle ones (waiting in the event loop) cost nothing.

Needs py-spy (pip install py-spy); run as root or with ptrace allowed.
With --warm, a long-lived server (`keel server start`, untimed) serves the runs instead, as in bench/pipeline.py's
long-lived part: the profile is then of keel's per-batch cost alone (its flow runs and tasks against a running server).

Run:  PYTHONPATH=. python bench/profile_pipeline.py [--months 12] [--rate 50] [--keep DIR] [--warm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent / "pipeline.py"

# (category, substrings of a frame; the first category with a frame on the stack wins)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("imports (interpreter start, keel, Prefect, lazy alibi/lightgbm)", ("_find_and_load",)),
    ("Prefect: temporary server start (waiting for /health)", ("SubprocessASGIServer.start",)),
    ("Prefect: flow heartbeat thread join at flow end", ("_send_heartbeats",)),
    ("compute: LightGBM training", ("train_model (core/model/train.py",)),
    ("compute: predict (design matrix + LightGBM)", ("predict (core/model/train.py",)),
    ("compute: parse model text", ("load_booster (core/model/train.py",)),
    ("compute: drift tests", ("detect_drift (", "score_drift (", "label_drift (")),
    ("compute: compare_models", ("compare_models (",)),
    ("store: record_predictions", ("record_predictions (",)),
    ("store: other keel writes and reads", ("core/store/", "core/registry/", "model_runs (", "training_window (")),
    ("artifacts: read + SHA-256, parse, copy, hash", ("load_dataset (", "read_verified (", "sha256_file (",
                                                      "put_file (", "put_bytes (", "frame_bytes (",
                                                      "read_batch (")),
    ("Prefect: result persistence", ("_persist_result_record", "ResultRecord.serialize")),
    ("Prefect: cache keys (hash inputs, task source)", ("compute_key (",)),
    ("Prefect: API calls to the server (HTTP)", ("PrefectHttpxSyncClient.send", "httpx/_client.py")),
    ("compute: rest of keel's stages", ("core/",)),
    ("Prefect: engine, states, events (in process)", ("prefect/",)),
    ("keel: flow and CLI glue", ("flows/", "cli/", "keel/")),
]

# leaf frames of a server thread that is waiting (py-spy --idle samples them too)
SERVER_IDLE = ("select (", "_wait_for_tstate_lock", "Condition.wait", "sleep", "aiosqlite/core.py:59)",
               "concurrent/futures/thread.py:81)", "Event.wait", "queue.py")


# --- what-ifs: proposed keel changes, applied by monkeypatching inside the keel subprocess ------------

WHAT_IFS = {
    "heartbeat-off": "no Prefect flow-run heartbeat thread (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None)",
    "one-client": "one Prefect API client for all flow runs of the command (SyncClientContext)",
    "frame-cache": "load_dataset memoised per process by dataset id (content-addressed, immutable)",
    "score-memo": "core.score memoised by (dataset, model SHA-256, bad rows): drift's reference scores",
    "cache-stages": "datasets and monitor tasks cached (INPUTS + TASK_SOURCE) like the others",
    "skip-replay-writes": "record_predictions returns when the batch already has this model's predictions",
    "quiet-server": "temporary server without task-run recorder and event persister (no SQLite-locked 503s)",
    "prefect-template": "a fresh PREFECT_HOME starts from a copy of an already migrated prefect.db",
}
TEMPLATE_ENV = "KEEL_BENCH_PREFECT_TEMPLATE"


def make_prefect_template(work: Path, src: Path) -> Path:
    """A migrated Prefect database (what a keel install could ship or build once), via SQLite's backup."""
    code = (
        "import os, sys, sqlite3\nfrom pathlib import Path\n"
        "os.environ['KEEL_HOME'] = sys.argv[1]\nfrom keel.flows.settings import configure_prefect\nconfigure_prefect()\n"
        "home = Path(sys.argv[1])\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "server = SubprocessASGIServer(); server.start(); server.stop()\n"
        "src = sqlite3.connect(home / 'prefect' / 'prefect.db'); dst = sqlite3.connect(sys.argv[2])\n"
        "src.backup(dst); dst.close(); src.close()\n"
    )
    target = work / "prefect-template.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env["PYTHONPATH"] = str(src)
    subprocess.run([sys.executable, "-c", code, str(work / "template-home"), str(target)], env=env, check=True,
                   cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with sqlite3.connect(target) as db:
        if not db.execute("select name from sqlite_master where name = 'alembic_version'").fetchone():
            raise SystemExit(f"the Prefect template {target} is not migrated")
    return target


def apply_what_ifs(names: list[str]) -> Any:
    """Patch keel now; return a context manager for the changes that wrap the whole command."""
    import contextlib
    import functools

    import keel.core.pipeline.stages as core
    import keel.core.store.records as records
    import keel.flows.run_pipeline as flows

    unknown = set(names) - set(WHAT_IFS)
    if unknown:
        raise SystemExit(f"unknown what-if {sorted(unknown)}; known: {', '.join(WHAT_IFS)}")
    if "frame-cache" in names:
        load = core.load_dataset
        memo: dict[str, Any] = {}

        @functools.wraps(load)
        def load_dataset(ws: Any, dataset_id: str) -> Any:
            if dataset_id not in memo:
                memo[dataset_id] = load(ws, dataset_id)
            return memo[dataset_id]

        core.load_dataset = load_dataset
    if "score-memo" in names:
        score = core.score
        scores: dict[tuple[str, str, tuple[int, ...]], Any] = {}

        @functools.wraps(score)
        def memo_score(ws: Any, dataset_id: str, production: dict[str, Any], bad: list[int]) -> Any:
            key = (dataset_id, production["sha256"], tuple(bad))
            if key not in scores:
                scores[key] = score(ws, dataset_id, production, bad)
            return scores[key]

        core.score = memo_score
    if "cache-stages" in names:
        flows.datasets = flows.datasets.with_options(cache_policy=flows.CACHED, persist_result=True)
        flows.monitor = flows.monitor.with_options(cache_policy=flows.CACHED, persist_result=True)
    if "skip-replay-writes" in names:
        record = records.record_predictions

        @functools.wraps(record)
        def record_predictions(ws: Any, dataset_id: str, model_version_id: int, *args: Any) -> None:
            with ws.engine.connect() as conn:
                from sqlalchemy import text

                done = conn.execute(text("select 1 from prediction where dataset_id = :d and model_version_id = :m "
                                         "limit 1"), {"d": dataset_id, "m": model_version_id}).first()
            if done is None:
                record(ws, dataset_id, model_version_id, *args)

        records.record_predictions = record_predictions

    if "quiet-server" in names:  # the server subprocess inherits the environment when it starts
        os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "false"
        os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"] = "false"
    if "prefect-template" in names:
        db = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
        if not db.exists():
            shutil.copyfile(os.environ[TEMPLATE_ENV], db)

    @contextlib.contextmanager
    def around() -> Any:
        with contextlib.ExitStack() as stack:
            if "heartbeat-off" in names:
                from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

                stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
            if "one-client" in names:
                from prefect.context import SyncClientContext

                stack.enter_context(SyncClientContext.get_or_create())
            yield

    return around()


def categorise(raw: Path) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Per process (keel or server): samples per category, and per leaf frame."""
    cats: dict[str, Counter[str]] = {"keel main thread": Counter(), "keel other threads": Counter(),
                                     "server busy": Counter(), "server idle": Counter()}
    leaves: dict[str, Counter[str]] = {k: Counter() for k in cats}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        processes = [f for f in frames if f.startswith("process ")]  # parent;child;... for a subprocess
        process = processes[-1] if processes else ""
        thread = next((f for f in frames if f.startswith("thread ")), "")
        pid = process.partition(":")[0].removeprefix("process ")
        body = [f for f in frames if not f.startswith(("process ", "thread "))]
        leaf = body[-1] if body else "?"
        if "uvicorn" in process:
            idle = any(k in leaf for k in SERVER_IDLE)
            key = "server idle" if idle else "server busy"
            cats[key][_server_part(body)] += n
        else:
            main = "MainThread" in thread or thread.startswith(f"thread ({pid})")
            key = "keel main thread" if main else "keel other threads"
            cats[key][_category(body)] += n
        leaves[key][leaf] += n
    return cats, leaves


def _category(body: list[str]) -> str:
    text = ";".join(body)
    for name, needles in RULES:
        if any(needle in text for needle in needles):
            return name
    return "other (interpreter, stdlib)"


def _server_part(body: list[str]) -> str:
    text = ";".join(body)
    for name, needle in (("migrations", "alembic"), ("imports", "_find_and_load"),
                         ("task run recorder (events)", "task_run_recorder"), ("event persistence", "events/"),
                         ("API handlers", "prefect/server/api/"), ("database", "sqlalchemy")):
        if needle in text:
            return name
    return "other"


def profile(cmd: list[str], env: dict[str, str], cwd: Path, raw: Path, rate: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "--idle", "--threads", "--subprocesses", "--rate", str(rate), "--format",
                    "raw", "--output", str(raw), "--", *cmd], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def show(title: str, raw: Path, rate: int) -> None:
    cats, leaves = categorise(raw)
    main = cats["keel main thread"]
    total = sum(main.values()) / rate
    print(f"\n{title}: keel main thread {total:.1f} s of samples")
    for name, n in main.most_common():
        print(f"  {n / rate:7.2f} s  {n / rate / total:5.1%}  {name}")
    for key in ("server busy", "server idle"):
        print(f"  Prefect server, {key.split()[1]}: {sum(cats[key].values()) / rate:.1f} s  "
              + ", ".join(f"{k} {v / rate:.1f}" for k, v in cats[key].most_common(6)))
    print("  top leaf frames of the main thread:")
    for frame, n in leaves["keel main thread"].most_common(12):
        print(f"  {n / rate:7.2f} s  {frame[:110]}")


def new_home(work: Path, name: str, batches: list[Path]) -> Path:
    home = work / name / ".keel"
    shutil.rmtree(home.parent, ignore_errors=True)
    (home / "demo" / "batches").mkdir(parents=True)
    for p in batches:  # the demo finds its batches written: preparing them is not measured
        os.link(p, home / "demo" / "batches" / p.name)
    return home


def keel_env(home: Path, what_if: str = "", src: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env.update(KEEL_HOME=str(home), PYTHONPATH=str(src), PYTHONWARNINGS="ignore")
    if what_if:
        env["KEEL_BENCH_WHAT_IF"] = what_if
    return env


def compare(args: argparse.Namespace, work: Path, batches: list[Path]) -> None:
    """Baseline against the what-ifs: cold once each, then cached reruns alternated."""
    sys.path.insert(0, str(BENCH.parent))
    from pipeline import run_child, snapshot, timer

    src = snapshot(work)  # the same code for every run, whatever is edited meanwhile
    homes = {"baseline": new_home(work, "baseline", batches), "what-if": new_home(work, "what-if", batches)}
    envs = {"baseline": keel_env(homes["baseline"], src=src),
            "what-if": keel_env(homes["what-if"], args.what_if, src)}
    if "prefect-template" in args.what_if:
        envs["what-if"][TEMPLATE_ENV] = str(make_prefect_template(work, src))
    months = ["--months", str(args.months)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for side in ("baseline", "what-if"):
        print(f"{side} cold ...", flush=True)
        runs[f"{side} cold"] = [run_child("keel", work / f"{side}-cold.json", envs[side], homes[side].parent, *months)]
    for i in range(args.pairs):
        for side in ("baseline", "what-if"):
            print(f"{side} rerun {i + 1} ...", flush=True)
            runs.setdefault(f"{side} rerun", []).append(
                run_child("keel", work / f"{side}-rerun{i}.json", envs[side], homes[side].parent, *months))
    print(f"\nwhat-if: {args.what_if}")
    for name in args.what_if.split(","):
        print(f"  {name}: {WHAT_IFS[name]}")
    labels = ["flow: call", "prefect: server start", "io: load_dataset (read+sha256+parse)", "compute: predict",
              "store: record_predictions", "task: datasets", "task: monitor", "compute: lightgbm train"]
    print(f"\n{'run':<18}{'wall s':>8}{'- train':>9}  " + "  ".join(f"{lab[:22]:>22}" for lab in labels)
          + "   exit s   503 retries")
    for name, results in runs.items():
        for i, r in enumerate(results):
            key = f"{name} {i + 1}" if len(results) > 1 else name
            train = timer(r, "compute: lightgbm train")
            retries = r["timers"].get("prefect: client retry back-off (info)", {"calls": 0, "incl_s": 0.0})
            cells = "  ".join(f"{timer(r, lab):>22.2f}" for lab in labels)
            print(f"{key:<18}{r['wall_s']:>8.1f}{r['wall_s'] - train:>9.1f}  {cells}   {r['exit_s']:6.2f}   "
                  f"{retries['calls']} ({retries['incl_s']:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rate", type=int, default=50, help="samples per second")
    parser.add_argument("--keep", type=Path, help="work folder to keep (raw profiles stay there)")
    parser.add_argument("--what-if", default="", help=f"instead of profiling, compare: {', '.join(WHAT_IFS)}")
    parser.add_argument("--pairs", type=int, default=2, help="alternated cached reruns per side (--what-if)")
    parser.add_argument("--warm", action="store_true", help="profile with a long-lived server (keel server start)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from keel.core.data.demo import write_batches

    work = args.keep or Path(tempfile.mkdtemp(prefix="keel-profile-"))
    batches = write_batches(work / "batches", args.months)
    try:
        if args.what_if:
            compare(args, work, batches)
            return
        sys.path.insert(0, str(BENCH.parent))
        from pipeline import snapshot

        src = snapshot(work)
        home = new_home(work, "profile", batches)
        env = keel_env(home, src=src)
        if args.warm:
            subprocess.run([sys.executable, "-m", "keel", "server", "start"], env=env, cwd=home.parent, check=True,
                           stdout=subprocess.DEVNULL)
        try:
            for name in ("cold", "rerun"):
                raw = work / f"{name}.raw"
                cmd = [sys.executable, str(BENCH), "--worker", "keel", "--out", str(work / f"{name}.json"),
                       "--months", str(args.months)]
                profile(cmd, env, home.parent, raw, args.rate)
                show(f"keel {name}" + (" (long-lived server)" if args.warm else ""), raw, args.rate)
        finally:
            if args.warm:
                subprocess.run([sys.executable, "-m", "keel", "server", "stop"], env=env, cwd=home.parent,
                               stdout=subprocess.DEVNULL)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

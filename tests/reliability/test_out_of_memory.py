"""A training job out of memory: the run fails in one line naming the stage, production keeps serving, the failure
alert fires, the batch waits as a dead letter, and its replay with memory leaves the store as a first success.

The memory is really refused by the kernel: an address-space limit (RLIMIT_AS, set with setrlimit in the
subprocess before it runs keel, and inherited by the training process keel starts), never a raised MemoryError.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
import time

import pytest
from fault_runs import api_url, children, engine, keel, project, start, vm_peak
from store_snapshot import snapshot

from keel.core.data.demo import DEMO_CONFIG

MB = 1 << 20
# Retrain on every batch, and training that needs far more memory than the rest of the run: LightGBM allocates
# a histogram pool of num_leaves entries (about 30 KB each on these batches: 3 GB) before the first tree, in
# a training process that starts with about 0.4 GB, while keel's own process peaks near 2.1 GB (its reservations).
CONFIG = (DEMO_CONFIG.replace("every = 3", "every = 1").replace("cooldown = 1", "cooldown = 0")
          .replace("[retrain]\n", "[retrain]\nparams = { num_leaves = 100000 }\nnum_boost_round = 20\n"))


def _limit(limit: int):  # noqa: ANN202
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run_watching_memory(batch, home, api) -> tuple[subprocess.CompletedProcess, int, int]:
    """`keel run` on the batch; with the largest address space of keel's process and of the training process."""
    proc = start("run", str(batch), home=home, api=api)
    keel_peak = train_peak = 0
    while proc.poll() is None:
        keel_peak = max(keel_peak, vm_peak(proc.pid) or 0)
        for child in children(proc.pid):
            train_peak = max(train_peak, vm_peak(child) or 0)
        time.sleep(0.02)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), keel_peak, train_peak


@pytest.mark.slow  # a subprocess that imports LightGBM, and a training process
def test_a_refused_allocation_in_training_is_one_model_error_naming_the_stage():
    """train_model under an address-space limit that the fit's histogram pool exceeds: keel's process lives on
    and gets 'train: out of memory' (LightGBM dies of SIGSEGV or raises std::bad_alloc in the training process)."""
    script = textwrap.dedent("""
        import re, resource
        import lightgbm  # noqa: F401  imported before the limit (OpenBLAS spins on a refused allocation at import)
        import numpy as np, polars as pl
        from keel.core.config import parse_config
        from keel.core.data.features import feature_spec
        from keel.core.errors import ModelError
        from keel.core.model.train import model_params, train_model
        rng = np.random.default_rng(0)
        frame = pl.DataFrame({f"x{i}": rng.random(3000) for i in range(10)}).with_columns(
            y=pl.Series((rng.random(3000) < 0.3).astype(int)))
        spec = feature_spec(parse_config({"model": "m", "target": "y"}), frame)
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20),) * 2)
        try:
            train_model(frame, spec, model_params({"num_leaves": 80000}, 1), 5)
            print("trained")
        except ModelError as exc:
            print(type(exc).__name__, exc.title, "|", exc)
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ModelError Out of memory | train: out of memory"), out.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_training_out_of_memory_fails_the_run_keeps_production_and_waits_as_a_dead_letter(demo_slices, tmp_path):
    from sqlmodel import Session, select

    from keel.core.config import Settings
    from keel.core.registry import transactions as registry
    from keel.core.store.models import Alert
    from keel.core.store.queries import dead_letters
    from keel.core.workspace import Workspace

    api = api_url()
    first, second = (str(b) for b in demo_slices[:2])
    clean, faulted = project(tmp_path / "clean", CONFIG), project(tmp_path / "faulted", CONFIG)
    # production v1 in each home; the second home's run replays the first's cached tasks (one training, not two)
    shared = {"PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "first-batch-results")}
    for home in (clean, faulted):
        done = keel("run", first, home=home, api=api, **shared)
        assert done.returncode == 0, done.stderr

    # the never-faulted run of the second batch measures what a run needs outside training, and training
    done, keel_peak, train_peak = _run_watching_memory(second, clean, api)
    assert done.returncode == 0, done.stderr
    limit = keel_peak + 256 * MB
    print(f"keel run peak {keel_peak // MB} MB, training process peak {train_peak // MB} MB, limit {limit // MB} MB")
    assert train_peak > limit + 256 * MB, f"training ({train_peak // MB} MB) must need more than the limit"

    failed = keel("run", second, home=faulted, api=api, preexec=_limit(limit))
    assert failed.returncode == 1
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert failed.stderr.startswith("keel: train: out of memory"), failed.stderr

    store = engine(faulted)
    (letter,) = dead_letters(store)
    assert letter["stage"] == "train" and letter["attempts"] == 1 and "out of memory" in letter["error"]
    with Session(store) as s:
        (alert,) = s.exec(select(Alert).where(Alert.rule == "failure")).all()
        assert "out of memory" in alert.message
    ws = Workspace.open(faulted.parent / "keel.toml", Settings(home=faulted))
    with ws.session() as s:
        production = registry.production_version(s, "flights-delay")
        assert production is not None and production.version == 1
        registry.verify_artifact(ws, production)  # its file still hashes and loads

    scored = keel("score", second, "--json", home=faulted, api=api, preexec=_limit(limit))  # serving, same limit
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["model_version"] == 1

    replay = keel("replay", letter["dataset_id"][:12], "--json", home=faulted, api=api)  # with memory
    assert replay.returncode == 0, replay.stderr
    assert dead_letters(store) == []
    assert snapshot(store) == snapshot(engine(clean))

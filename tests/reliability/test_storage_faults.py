"""Failing storage: a full or read-only artifact store, and a full disk under the SQLite store. The run fails in one
line naming the reason, production keeps serving, nothing is half-written under its final name, and the run after
the fault is cleared leaves the store as a never-faulted run's.

The faults are the kernel's: the folder is a small tmpfs the test mounts, filled with a file until the write that
matters gets ENOSPC, or remounted read-only (EROFS). Mounting needs root (the tests skip without it); tests run as
root here, where a folder made read-only by chmod would not stop a write.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from fault_runs import api_url, engine, keel, project
from store_snapshot import snapshot

from keel.core.data.demo import DEMO_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CONFIG = DEMO_CONFIG.replace("every = 3", "every = 1").replace("cooldown = 1", "cooldown = 0")  # retrain each batch
ROOT = os.geteuid() == 0


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A folder on its own 16 MB tmpfs (root only), unmounted after the test."""
    if not ROOT:
        pytest.skip("mounting a small file system needs root")
    mounted: list[Path] = []

    def make(path: Path) -> Path:
        _mount_tmpfs(path, "16m")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the file system of ``disk`` with one file, leaving ``leave`` bytes free (in whole pages)."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def _artifacts(home: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (home / "artifacts").rglob("*") if p.is_file() and p.name != "filler"}


def _whole(home: Path) -> None:
    """Every artifact is whole under its final name (it hashes to its name); no temporary file is left."""
    for path in (home / "artifacts").rglob("*"):
        if path.is_file() and path.name != "filler":
            assert not path.name.startswith(".tmp-"), f"temporary file left: {path}"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0], f"half-written: {path}"


def _production(home: Path) -> tuple[int, str]:
    """Production's version and artifact, after checking its file still hashes and loads."""
    from keel.core.config import Settings
    from keel.core.registry import transactions as registry
    from keel.core.workspace import Workspace

    ws = Workspace.open(home.parent / "keel.toml", Settings(home=home))
    with ws.session() as s:
        mv = registry.production_version(s, "flights-delay")
        assert mv is not None
        registry.verify_artifact(ws, mv)
        return mv.version, mv.artifact_sha256


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, str]:
    """One Prefect result storage for the module's homes: the faults here are in writes no cache skips."""
    return {"PREFECT_LOCAL_STORAGE_PATH": str(tmp_path_factory.mktemp("results"))}


@pytest.fixture(scope="module")
def never_faulted(demo_slices, tmp_path_factory, prefect_server, results) -> tuple[Path, dict]:
    home = project(tmp_path_factory.mktemp("clean") / "project", CONFIG)
    api = api_url()
    for batch in demo_slices[:2]:
        done = keel("run", str(batch), home=home, api=api, **results)
        assert done.returncode == 0, done.stderr
    return home, snapshot(engine(home))


def _one_line(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stderr)
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, out.stderr
    assert all(w in line for w in words), line
    print(line)


def test_a_full_artifact_store_fails_the_model_write_keeps_production_and_the_rerun_completes(
        demo_slices, tmp_path, small_disk, never_faulted, results):
    """ENOSPC on a 16 MB tmpfs, filled so the batch and the training sets fit and the model file does not."""
    from keel.core.store.queries import dead_letters

    clean, expected = never_faulted
    api, first, second = api_url(), str(demo_slices[0]), str(demo_slices[1])
    home = project(tmp_path / "faulted", CONFIG)
    small_disk(home / "artifacts")
    assert keel("run", first, home=home, api=api, **results).returncode == 0
    before = _production(home)

    new = {name: size for name, size in _artifacts(clean).items() if name not in _artifacts(home)}
    model = max(size for name, size in new.items() if name.endswith(".txt"))
    data = sum(size for name, size in new.items() if name.endswith(".parquet"))
    assert model > 64 * 1024, "the model file must be larger than the room left for it"
    filler = _fill(home / "artifacts", leave=data + 8 * 4096 + 16 * 1024)

    failed = keel("run", second, home=home, api=api, **results)
    _one_line(failed, "cannot write", "artifact store", "No space left on device")
    (letter,) = dead_letters(engine(home))
    assert letter["stage"] == "register" and "No space left on device" in letter["error"]
    assert _production(home) == before
    _whole(home)

    scored = keel("score", second, "--json", home=home, api=api, **results)  # production serves on the full disk
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["model_version"] == before[0]

    filler.unlink()  # the fault cleared
    rerun = keel("run", second, home=home, api=api, **results)
    assert rerun.returncode == 0, rerun.stderr
    assert dead_letters(engine(home)) == []
    _whole(home)
    assert snapshot(engine(home)) == expected


def test_a_read_only_artifact_store_fails_the_ingest_keeps_production_and_the_rerun_completes(
        demo_slices, tmp_path, small_disk, never_faulted, results):
    """EROFS: the artifact store's tmpfs remounted read-only after the first batch."""
    from keel.core.store.queries import dead_letters

    _, expected = never_faulted
    api, first, second = api_url(), str(demo_slices[0]), str(demo_slices[1])
    home = project(tmp_path / "faulted", CONFIG)
    artifacts = small_disk(home / "artifacts")
    assert keel("run", first, home=home, api=api, **results).returncode == 0
    before = _production(home)

    subprocess.run(["mount", "-o", "remount,ro", str(artifacts)], check=True)
    try:
        failed = keel("run", second, home=home, api=api, **results)
        _one_line(failed, "cannot write", "artifact store", "Read-only file system")
        (letter,) = dead_letters(engine(home))
        assert letter["stage"] == "ingest"
        assert _production(home) == before
        _whole(home)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(artifacts)], check=True)

    rerun = keel("run", second, home=home, api=api, **results)
    assert rerun.returncode == 0, rerun.stderr
    assert dead_letters(engine(home)) == []
    _whole(home)
    assert snapshot(engine(home)) == expected


def test_a_full_disk_under_the_sqlite_store_fails_in_one_line_and_the_rerun_completes(
        demo_slices, tmp_path, small_disk, never_faulted, results):
    """SQLITE_FULL: the store's file on a tmpfs filled to the last page after the first batch."""
    _, expected = never_faulted
    api, first, second = api_url(), str(demo_slices[0]), str(demo_slices[1])
    home = project(tmp_path / "faulted", CONFIG)
    disk = small_disk(tmp_path / "store-disk")
    store = {**results, "KEEL_DATABASE_URL": f"sqlite:///{disk / 'keel.db'}"}
    assert keel("run", first, home=home, api=api, **store).returncode == 0
    filler = _fill(disk, leave=0)

    failed = keel("run", second, home=home, api=api, **store)
    _one_line(failed, "store", "database or disk is full")

    filler.unlink()
    rerun = keel("run", second, home=home, api=api, **store)
    assert rerun.returncode == 0, rerun.stderr
    from keel.core.store.engine import get_engine

    assert snapshot(get_engine(f"sqlite:///{disk / 'keel.db'}")) == expected

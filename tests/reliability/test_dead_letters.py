"""A failed run is a dead letter (stage, error, attempts); `keel replay` takes it; a replay that gets through
leaves the store as a first-time success would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_snapshot import snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BAD = ("[retrain]\n", "[retrain]\nparams = { num_leaves = -5 }\n")  # LightGBM refuses it: train fails


def _keel(*args: str, home: Path, api: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEEL_HOME": str(home), "PREFECT_API_URL": api}
    return subprocess.run([sys.executable, "-m", "keel", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _engine(home: Path):
    from keel.core.config import Settings
    from keel.core.workspace import open_store

    return open_store(Settings(home=home))


def test_a_failed_batch_waits_as_a_dead_letter_and_its_replay_leaves_the_store_as_a_first_success(
        demo_slices, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from keel.core.data.demo import DEMO_CONFIG
    from keel.core.store.queries import dead_letters

    api = str(PREFECT_API_URL.value())
    failing, clean = tmp_path / "failing", tmp_path / "clean"
    for root in (failing, clean):
        root.mkdir()
        (root / "keel.toml").write_text(DEMO_CONFIG)
    assert BAD[0] in DEMO_CONFIG
    (failing / "keel.toml").write_text(DEMO_CONFIG.replace(*BAD))
    batch = str(demo_slices[0])

    for attempt in (1, 2):
        out = _keel("run", batch, home=failing / ".keel", api=api, cwd=failing)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "LightGBM" in out.stderr and "Traceback" not in out.stderr
        (letter,) = dead_letters(_engine(failing / ".keel"))
        assert letter["stage"] == "train" and letter["attempts"] == attempt and "LightGBM" in letter["error"]
        assert letter["dataset_id"] and letter["batch"] == Path(batch).name
    listed = json.loads(_keel("dead-letters", "--json", home=failing / ".keel", api=api, cwd=failing).stdout)
    assert [(d["stage"], d["attempts"]) for d in listed] == [("train", 2)]

    (failing / "keel.toml").write_text(DEMO_CONFIG)  # the cause fixed
    replay = _keel("replay", letter["dataset_id"][:10], "--json", home=failing / ".keel", api=api, cwd=failing)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["decision"] == "promoted"
    assert dead_letters(_engine(failing / ".keel")) == []

    assert _keel("run", batch, home=clean / ".keel", api=api, cwd=clean).returncode == 0
    assert snapshot(_engine(failing / ".keel")) == snapshot(_engine(clean / ".keel"))

"""Fresh homes start from keel's migrated Prefect database instead of migrating from nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from keel.flows import prefect_db


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return prefect_db.build(tmp_path_factory.mktemp("template") / "prefect.db")


def test_the_template_is_one_migrated_file(template):
    assert _revision(template)
    assert not template.with_name(template.name + "-wal").exists()
    with sqlite3.connect(template) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("SELECT count(*) FROM flow_run").fetchone()[0] == 0, "empty: no runs of anybody's"


def test_seed_copies_only_into_a_home_without_a_database(template, tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_PREFECT_TEMPLATE", str(template))
    for name in prefect_db.OWN_DATABASE:
        monkeypatch.delenv(name, raising=False)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert prefect_db.seed(fresh) is True
    assert (fresh / "prefect.db").read_bytes() == template.read_bytes()
    assert sorted(p.name for p in fresh.iterdir()) == [prefect_db.BLOCKS_MARKER, "prefect.db"], \
        "no partial copy left behind"
    (fresh / "prefect.db").write_bytes(b"somebody's database")
    assert prefect_db.seed(fresh) is False and (fresh / "prefect.db").read_bytes() == b"somebody's database"
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert prefect_db.seed(other) is False, "a server of the user's own: nothing to seed"
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("KEEL_PREFECT_TEMPLATE", str(tmp_path / "missing.db"))
    assert prefect_db.seed(other) is False and not (other / "prefect.db").exists(), "no template: Prefect migrates"
    (tmp_path / "notes.txt").write_text("not a database")
    monkeypatch.setenv("KEEL_PREFECT_TEMPLATE", str(tmp_path / "notes.txt"))
    assert prefect_db.seed(other) is False and not (other / "prefect.db").exists(), "not SQLite: Prefect migrates"


def test_a_run_in_a_fresh_home_starts_from_the_template(template, demo_slices, tmp_path):
    from keel.core.data.demo import DEMO_CONFIG

    config = tmp_path / "keel.toml"
    config.write_text(DEMO_CONFIG)
    marked = tmp_path / "marked.db"  # the template plus a table of our own: only a copy of it carries that table
    marked.write_bytes(template.read_bytes())
    with sqlite3.connect(marked) as db:
        db.execute("CREATE TABLE keel_template_marker (id INTEGER)")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
    env.update(KEEL_HOME=str(home), KEEL_PREFECT_TEMPLATE=str(marked))
    proc = subprocess.run([sys.executable, "-m", "keel", "run", str(demo_slices[0]), "--config", str(config), "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    seeded = home / "prefect" / "prefect.db"
    assert _revision(seeded) == _revision(template), "Prefect found the schema at head and kept it"
    with sqlite3.connect(seeded) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'keel_template_marker'").fetchone(), \
            "the home's database is the template's copy, not one Prefect migrated from nothing"
        assert db.execute("SELECT count(*) FROM flow_run").fetchone()[0] == 1, "the run was recorded in the copy"


def test_a_fresh_homes_first_server_finds_the_block_types_registered_and_prefect_remembers_them(template, tmp_path,
                                                                                               monkeypatch):
    import urllib.request

    from keel.flows.local_server import TemporaryServer

    monkeypatch.setenv("KEEL_PREFECT_TEMPLATE", str(template))
    for name in (*prefect_db.OWN_DATABASE, *prefect_db.REGISTER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    with sqlite3.connect(template) as db:
        assert db.execute("SELECT count(*) FROM block_type").fetchone()[0] > 0, "registered at build"
    home = tmp_path / "prefect"
    home.mkdir()
    assert prefect_db.seed(home) is True
    assert prefect_db.server_env(home) == {"PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false"}
    monkeypatch.setenv("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", "true")
    assert prefect_db.server_env(home) == {}, "the user's own setting stands"
    monkeypatch.delenv("PREFECT_SERVER_REGISTER_BLOCKS_ON_START")

    monkeypatch.setenv("PREFECT_HOME", str(home))
    server = TemporaryServer(home)
    try:
        url = server.wait(timeout=120)
        assert url is not None
        request = urllib.request.Request(f"{url}/block_types/filter", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            slugs = {b["slug"] for b in json.loads(answer.read())}
    finally:
        server.stop()
    assert "remote-file-system" in slugs, "keel's result storage block type is there"
    assert (home / "memo_store.toml").exists(), "Prefect remembers the registration: later starts skip it"
    assert prefect_db.server_env(home) == {} and not (home / prefect_db.BLOCKS_MARKER).exists()


def test_a_template_built_with_other_prefect_collections_registers_blocks_as_prefect_does(template, tmp_path,
                                                                                        monkeypatch):
    other = tmp_path / "other.db"
    other.write_bytes(template.read_bytes())
    other.with_name(other.name + ".blocks").write_text("prefect_aws=prefect_aws")  # a collection not installed now
    monkeypatch.setenv("KEEL_PREFECT_TEMPLATE", str(other))
    for name in (*prefect_db.OWN_DATABASE, *prefect_db.REGISTER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "prefect"
    home.mkdir()
    assert prefect_db.seed(home) is True
    assert prefect_db.server_env(home) == {}, "Prefect registers the block types on the first start"

"""One error boundary: lower layers' exceptions become keel's, in one line naming what failed."""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from keel.core import errors
from keel.core.errors import (
    ArtifactError,
    Conflict,
    KeelError,
    ModelError,
    NotFound,
    PrefectError,
    StoreError,
    map_exceptions,
    mask_secrets,
    mask_url,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mapped_library_error_becomes_the_keel_error_and_keeps_its_cause():
    original = PermissionError(errno.EACCES, "Permission denied", "/data/artifacts/ab")
    with pytest.raises(ArtifactError) as caught, map_exceptions(errors.artifact_errors("/data/artifacts", writing=True)):
        raise original
    assert str(caught.value) == ("cannot write /data/artifacts/ab in the artifact store at /data/artifacts "
                                 "(Permission denied)")
    assert caught.value.__cause__ is original, "--debug still shows the library's error"


def test_the_most_specific_mapped_class_wins_whatever_the_order():
    mapping = {"builtins.OSError": lambda exc: StoreError("any OS error"),
               "builtins.FileNotFoundError": lambda exc: NotFound("a missing file"),
               "builtins.Exception": lambda exc: KeelError("anything")}
    with pytest.raises(NotFound, match="a missing file"), map_exceptions(mapping):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")
    with pytest.raises(StoreError, match="any OS error"), map_exceptions(mapping):
        raise PermissionError(errno.EACCES, "Permission denied", "x")


def test_unmapped_errors_and_keel_errors_pass_through_unchanged():
    mapping = {"builtins.OSError": lambda exc: StoreError("translated")}
    bug, own = ValueError("a bug stays a bug"), Conflict("keel's own error")
    for exc in (bug, own):
        with pytest.raises(type(exc)) as caught, map_exceptions(mapping):
            raise exc
        assert caught.value is exc


def test_a_library_that_is_not_imported_is_not_imported_to_check():
    code = (
        "import json, sys\n"
        "from keel.core import errors\n"
        "mapping = {**errors.store_errors('sqlite:///x.db', opening=True), **errors.lightgbm_errors('training'),\n"
        "           **errors.prefect_errors(None, 'flow run x'), **errors.lost_race('the registry')}\n"
        "try:\n"
        "    with errors.map_exceptions(mapping):\n"
        "        raise KeyError('not mapped')\n"
        "except KeyError:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert not loaded & {"sqlalchemy", "sqlite3", "psycopg2", "lightgbm", "prefect", "httpx", "alembic"}


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg2://keel:s3cret@db.internal:5432/keel", "postgresql+psycopg2://keel:***@db.internal:5432/keel"),
    ("postgresql://keel:p@ss/word@db/keel", "postgresql://keel:***@db/keel"),
    ("postgresql://keel@db/keel", "postgresql://keel@db/keel"),
    ("sqlite:////home/ops@corp/.keel/keel.db", "sqlite:////home/ops@corp/.keel/keel.db"),
    ("sqlite:///.keel/keel.db?timeout=5", "sqlite:///.keel/keel.db?timeout=5"),
    ("keel:s3cret@db/keel", "keel:***@db/keel"),  # no scheme: not a URL SQLAlchemy parses, still masked
    ("/srv/ops@corp/keel.db", "/srv/ops@corp/keel.db"),
])
def test_store_urls_are_shown_with_the_password_masked(url, shown):
    assert mask_url(url) == shown


@pytest.mark.parametrize(("text", "shown"), [
    ("Could not parse SQLAlchemy URL from string 'postgresql://keel:s3cret@db:port/x'",
     "Could not parse SQLAlchemy URL from string 'postgresql://keel:***@db:port/x'"),
    ("send to mailtos://ops:s3cret@mail.corp/?to=a@b.c and json://u:s3cret@hook:1/x failed",
     "send to mailtos://ops:***@mail.corp/?to=a@b.c and json://u:***@hook:1/x failed"),
    ("the store at postgresql://keel@db/keel and sqlite:////home/ops@corp/keel.db", None),
    ("no url here: user:s3cret@host", None),
])
def test_every_url_password_in_a_message_is_masked(text, shown):
    assert mask_secrets(text) == (shown or text)


def test_a_locked_sqlite_store_is_named_in_one_line(tmp_path):
    from sqlalchemy import create_engine, text

    db = tmp_path / "keel.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    url = f"sqlite:///{db}"
    engine = create_engine(url, connect_args={"timeout": 0.1})
    try:
        with pytest.raises(StoreError) as caught, map_exceptions(errors.store_errors(url)), engine.connect() as conn:
            conn.execute(text("SELECT * FROM t"))
    finally:
        holder.execute("ROLLBACK")
        engine.dispose()
    assert str(caught.value) == f"the store at {url} is locked by another writer (database is locked)"


def test_a_dropped_or_refused_postgresql_connection_is_named_without_its_password():
    import psycopg2
    from sqlalchemy.exc import OperationalError

    url = "postgresql+psycopg2://keel:s3cret@db.internal/keel"
    dropped = OperationalError("SELECT 1", {}, psycopg2.OperationalError(
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"),
        connection_invalidated=True)
    with pytest.raises(StoreError) as caught, map_exceptions(errors.store_errors(url)):
        raise dropped
    assert str(caught.value) == ("the connection to the store at postgresql+psycopg2://keel:***@db.internal/keel "
                                 "was dropped (server closed the connection unexpectedly)")
    port = _closed_port()
    with pytest.raises(StoreError) as caught, map_exceptions(errors.store_errors(url)):
        psycopg2.connect(host="127.0.0.1", port=port, user="keel", password="s3cret", connect_timeout=5)
    message = str(caught.value)
    assert message.startswith("cannot connect to the store at postgresql+psycopg2://keel:***@db.internal/keel (")
    assert "refused" in message and "s3cret" not in message and "\n" not in message


def test_a_deadlock_on_postgresql_is_a_conflict_to_retry():
    import psycopg2
    from sqlalchemy.exc import OperationalError

    with pytest.raises(Conflict, match="look again and retry"), map_exceptions(errors.store_errors("postgresql://db/k")):
        raise OperationalError("UPDATE alias", {}, psycopg2.OperationalError("deadlock detected\nDETAIL: ..."))


def test_an_unreachable_prefect_api_is_named_in_one_line():
    import httpx

    api = f"http://127.0.0.1:{_closed_port()}/api"
    with pytest.raises(PrefectError) as caught, map_exceptions(errors.prefect_errors(api, "flow run 1234")):
        httpx.get(f"{api}/flow_runs/1234", timeout=5)
    assert str(caught.value).startswith(f"the Prefect API at {api} cannot be reached (")


def test_lightgbm_errors_name_the_stage():
    from keel.core.model.train import load_booster

    with pytest.raises(ModelError) as caught:
        load_booster("not a LightGBM model\n")
    assert str(caught.value) == ("LightGBM failed while loading a model: "
                                 "Model file doesn't specify the number of classes")


def test_an_artifact_store_under_a_regular_file_fails_naming_the_store(tmp_path):
    from keel.core.data.artifacts import Artifacts

    (tmp_path / "not-a-folder").write_text("a regular file where the artifact folder's parent should be")
    root = tmp_path / "not-a-folder" / "artifacts"
    store = Artifacts(root)
    for write in (lambda: store.put_bytes(b"model text", ".txt"),
                  lambda: store.put_file(tmp_path / "not-a-folder")):
        with pytest.raises(ArtifactError) as caught:
            write()
        message = str(caught.value)
        assert message.startswith("cannot write ") and f"in the artifact store at {root} (Not a directory)" in message


def test_a_failed_artifact_write_leaves_no_temporary_file(tmp_path):
    from keel.core.data.artifacts import Artifacts

    store = Artifacts(tmp_path / "artifacts")
    sha, dest = store.put_bytes(b"kept", ".txt")
    missing = tmp_path / "gone.parquet"
    with pytest.raises(ArtifactError) as caught:
        store.put_file(missing, sha="ab" + "0" * 62)
    assert str(caught.value) == (f"cannot copy {missing} into the artifact store at {tmp_path / 'artifacts'} "
                                 "(No such file or directory)")
    assert [p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == [dest.name]
    assert Path(dest).read_bytes() == b"kept" and sha


def test_any_read_through_a_keel_engine_on_a_locked_store_is_a_store_error(tmp_path):
    from sqlmodel import Session, select

    from keel.core.store.engine import dispose_engines, get_engine
    from keel.core.store.models import PipelineRun

    url = f"sqlite:///{tmp_path / 'keel.db'}?timeout=0.1"
    engine = get_engine(url)  # opened and migrated before the lock: only the read itself can fail
    engine.dispose()  # no pooled connection left to share the database with the holder
    holder = sqlite3.connect(tmp_path / "keel.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as caught, Session(engine) as session:  # a bare session, no session_scope
            session.exec(select(PipelineRun)).all()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        dispose_engines()
    assert str(caught.value) == f"the store at {url} is locked by another writer (database is locked)"


def test_running_out_of_memory_in_training_is_said_as_such_naming_the_stage():
    """numpy's MemoryError and LightGBM's std::bad_alloc (what LightGBM 4.7 raises when Dataset construction is
    refused memory) are one line: the stage, out of memory, the library's reason."""
    import lightgbm

    for raised, why in ((MemoryError("Unable to allocate 1.2 GiB for an array with shape (1000, 160000)"),
                         "Unable to allocate 1.2 GiB for an array with shape (1000, 160000)"),
                        (lightgbm.basic.LightGBMError("std::bad_alloc"), "std::bad_alloc")):
        with pytest.raises(ModelError) as caught, map_exceptions(errors.lightgbm_errors("training", step="train")):
            raise raised
        assert str(caught.value).startswith(f"train: out of memory while training ({why})"), str(caught.value)
        assert caught.value.title == "Out of memory"

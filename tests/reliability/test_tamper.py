"""Tampering: an edited or removed audit row and a changed model byte are caught."""

from __future__ import annotations

import pytest
import registry_world as world
from click.testing import CliRunner
from sqlalchemy import text
from sqlmodel import Session, select

from keel.cli.main import cli
from keel.core.errors import ChecksumMismatch
from keel.core.registry import audit
from keel.core.registry import transactions as registry
from keel.core.store.models import ModelVersion


@pytest.fixture
def ws(keel_home):
    ws = world.workspace(world.build(keel_home.parent, versions=3))
    for v in (1, 2, 3):
        registry.promote(ws, "churn", v, f"v{v}", actor="alice")
    registry.rollback(ws, "churn", "v3 misbehaves", actor="bob")
    return ws


def _sql(ws, statement: str) -> None:
    with ws.engine.begin() as conn:
        conn.execute(text(statement))


def _verify_cli(config) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", "verify", "--config", str(config)])
    return result.exit_code, result.output


def test_audit_verify_passes_on_an_untouched_chain(ws):
    code, out = _verify_cli(ws.config_path)
    assert code == 0 and "4 events verified" in out


def test_edited_audit_row_is_named_by_audit_verify(ws):
    _sql(ws, "UPDATE audit_event SET reason = 'nothing to see' WHERE id = 2")
    result = audit.verify(ws.engine)
    assert not result.ok and result.first_bad_id == 2 and "edited" in result.problem
    code, out = _verify_cli(ws.config_path)
    assert code == 1 and "event #2" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_edited_newest_row_is_caught(ws):
    _sql(ws, "UPDATE audit_event SET actor = 'mallory' WHERE id = 4")
    assert audit.verify(ws.engine).first_bad_id == 4


def test_removed_middle_audit_row_breaks_the_chain(ws):
    _sql(ws, "DELETE FROM audit_event WHERE id = 2")
    result = audit.verify(ws.engine)
    assert not result.ok and result.first_bad_id == 3 and "removed" in result.problem


def test_removed_newest_audit_row_is_caught_by_the_head(ws):
    _sql(ws, "DELETE FROM audit_event WHERE id = 4")
    result = audit.verify(ws.engine)
    assert not result.ok and "removed" in result.problem and result.first_bad_id == 4
    code, out = _verify_cli(ws.config_path)
    assert code == 1 and "1 event(s) after #3 were removed" in out


def test_one_changed_byte_of_a_model_file_blocks_promote_and_rollback(ws):
    with Session(ws.engine) as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.version == 3)).one()
    path = __import__("pathlib").Path(mv.artifact_uri)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="does not match its SHA-256"):
        registry.promote(ws, "churn", 3, "try the tampered one", actor="alice")
    with pytest.raises(ChecksumMismatch):
        registry.rollback(ws, "churn", "go back to v3", to=3, actor="alice")
    runner = CliRunner()
    for args in (["promote", "churn", "3"], ["rollback", "churn", "--to", "3"]):
        result = runner.invoke(cli, [*args, "--reason", "tampered", "--config", str(ws.config_path)])
        assert result.exit_code == 1 and "does not match its SHA-256" in result.output
        assert "Traceback" not in result.output
    with Session(ws.engine) as s:
        assert registry.production_version(s, "churn").version == 2, "production untouched"
    assert audit.verify(ws.engine).ok, "a refused change leaves the chain intact"


def test_a_model_file_that_hashes_right_but_does_not_load_is_refused(ws):
    with Session(ws.engine) as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.version == 1)).one()
    sha, dest = ws.artifacts.put_bytes(b"not a lightgbm model\n", ".txt")
    _sql(ws, f"UPDATE model_version SET artifact_sha256 = '{sha}', artifact_uri = '{dest}' WHERE id = {mv.id}")
    with pytest.raises(ChecksumMismatch, match="does not load"):
        registry.rollback(ws, "churn", "to v1", to=1, actor="alice")

"""The registry commands: exit codes, one-line errors, JSON, the real store."""

from __future__ import annotations

import json

import pytest
import registry_world as world
from click.testing import CliRunner

from keel.cli.main import cli
from keel.core.registry import transactions as registry


def _keel(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def config(keel_home):
    config = world.build(keel_home.parent, versions=3)
    ws = world.workspace(config)
    registry.promote(ws, "churn", 1, "first", actor="setup")
    registry.open_review(ws, "churn", 2, ["ambiguous AUC change"], None, None, actor="keel (pipeline)")
    return str(config)


def test_reviews_approve_history_and_rollback_from_the_command_line(config):
    code, out = _keel("reviews", "--config", config, "--json")
    [review] = json.loads(out)
    assert code == 0 and review["candidate_version"] == 2 and review["approvers"] == "anyone"
    code, out = _keel("reviews", "--config", config)
    assert "ambiguous AUC change" in out and "v2" in out
    assert _keel("approve", "churn", "2", "--reason", "slices look fine", "--config", config)[0] == 0
    code, out = _keel("approve", "churn", "2", "--reason", "again", "--config", config)
    assert code == 5 and out.startswith("keel: ") and "already approved" in out and len(out.splitlines()) == 1
    code, out = _keel("rollback", "churn", "--reason", "v2 misfires", "--config", config)
    assert code == 0 and "v1 is now production" in out
    code, out = _keel("history", "churn", "--config", config, "--json")
    assert [p["version"] for p in json.loads(out)] == [1, 2, 1]
    code, out = _keel("history", "churn", "--at", "2001-01-01T00:00:00Z", "--config", config)
    assert code == 0 and "nothing of churn was in production" in out
    assert _keel("history", "churn", "--at", "yesterday", "--config", config)[0] == 2
    code, out = _keel("lineage", "churn", "2", "--config", config)
    assert code == 0 and "approve" in out and "batch.parquet" in out
    assert _keel("audit", "verify", "--config", config)[0] == 0


def test_reject_promote_and_usage_errors_exit_codes(config):
    assert _keel("approve", "churn", "2", "--config", config)[0] == 2, "--reason is required"
    assert _keel("promote", "churn", "9", "--reason", "x", "--config", config)[0] == 2
    assert _keel("promote", "churn", "1", "--reason", "x", "--config", "missing.toml")[0] == 2
    assert _keel("reject", "churn", "2", "--reason", "accuracy drop", "--config", config)[0] == 0
    code, out = _keel("reject", "churn", "2", "--reason", "again", "--config", config)
    assert code == 5 and "already rejected" in out
    assert _keel("promote", "churn", "3", "--reason", "hand-picked", "--config", config, "--json")[0] == 0


def test_a_user_who_is_not_an_approver_gets_exit_4_and_is_audited(keel_home):
    config = str(world.build(keel_home.parent, versions=2, approvers=["somebody-else"]))
    code, out = _keel("promote", "churn", "1", "--reason", "mine", "--config", config)
    assert code == 4 and "may not promote churn" in out
    code, out = _keel("rollback", "churn", "--reason", "mine", "--config", config)
    assert code == 4
    from sqlmodel import Session, select

    from keel.core.store.models import AuditEvent

    with Session(world.workspace(config).engine) as s:
        assert [e.action for e in s.exec(select(AuditEvent))] == ["refused:promote", "refused:rollback"]


def test_no_flag_or_environment_lets_a_user_act_as_someone_else(config, monkeypatch):
    monkeypatch.setenv("KEEL_ACTOR", "root-impersonated")
    for var in ("USER", "LOGNAME", "USERNAME"):  # getpass would believe these; keel reads the uid
        monkeypatch.setenv(var, "someone-else")
    assert "--actor" not in CliRunner().invoke(cli, ["approve", "--help"]).output
    _keel("approve", "churn", "2", "--reason", "ok", "--config", config)
    import os
    import pwd

    from keel.core.registry.lineage import history

    actor = history(world.workspace(config).engine, "churn")[-1]["actor"]
    assert actor.split("@")[0] == pwd.getpwuid(os.getuid()).pw_name


def test_score_and_trace_from_the_command_line(config, keel_home):
    batch = keel_home.parent / "batch.parquet"
    out = keel_home.parent / "preds.csv"
    code, text = _keel("score", str(batch), "--out", str(out), "--config", config)
    assert code == 0 and "with churn v1" in text and out.read_text().startswith("row_id,score,label")
    code, text = _keel("trace", "r0-3", "--batch", str(batch), "--config", config, "--json")
    [t] = json.loads(text)
    assert t["model"]["version"] == 1 and t["approval"]["actor"] == "setup"
    assert _keel("trace", "nope", "--config", config)[0] == 2
    assert _keel("score", str(batch), "--out", "x.txt", "--config", config)[0] == 2


def test_a_waiting_run_that_cannot_be_resumed_is_reported_on_stderr_and_the_rejection_stands(keel_home):
    import os
    import subprocess
    import sys

    config = world.build(keel_home.parent, versions=2)
    ws = world.workspace(config)
    registry.promote(ws, "churn", 1, "first", actor="setup")
    flow_run_id = world.review_with_a_waiting_run(ws, 2)
    api = f"http://127.0.0.1:{world.closed_port()}/api"
    out = subprocess.run([sys.executable, "-m", "keel", "reject", "churn", "2", "--reason", "worse on log loss",
                          "--config", str(config)], env={**os.environ, "PREFECT_API_URL": api},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, "the rejection is recorded"
    assert out.stdout == "rejected: churn v2\n"
    [line] = out.stderr.splitlines()
    assert line.startswith(f"keel: decision recorded, but the waiting flow run {flow_run_id} could not be resumed: "
                           f"the Prefect API at {api} cannot be reached (")
    code, text = _keel("reviews", "--all", "--config", str(config), "--json")
    assert code == 0 and json.loads(text)[0]["status"] == "rejected"

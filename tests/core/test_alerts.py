"""Alert rules on the real SQLite store: k of n, cool-down, de-duplication, delivery over loopback, ack."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import Session, select

from keel.core.monitoring import alerts
from keel.core.monitoring.alerts import Check
from keel.core.store.models import Alert, AlertCheck, AuditEvent
from keel.core.store.queries import alerts_page
from keel.core.workspace import Workspace


class Inbox:
    """A loopback HTTP server that keeps every JSON body Apprise posts to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"json://127.0.0.1:{port}/hook"


def workspace(keel_home: Path, urls: list[str], k: int = 1, n: int = 1, cooldown: int = 0, **rules: bool) -> Workspace:
    path = keel_home.parent / "keel.toml"
    extra = "".join(f"{key} = {str(v).lower()}\n" for key, v in rules.items())
    path.write_text(f'model = "m"\ntarget = "y"\n[alerts]\nurls = {json.dumps(urls)}\npersist_k = {k}\n'
                    f"persist_n = {n}\ncooldown = {cooldown}\n{extra}")
    return Workspace.open(path)


def feed(ws: Workspace, pattern: list[bool], rule: str = "drift", same_batch: bool = False) -> list[int]:
    """Evaluate one rule over a sequence of runs; the indices of the runs that fired."""
    fired = []
    for i, breached in enumerate(pattern):
        out = alerts.evaluate(ws, f"run-{rule}-{i}", "batch-x" if same_batch else f"batch-{i}",
                              [Check(rule, breached, f"{rule} on batch {i}", float(i))])
        if out:
            fired.append(i)
    return fired


def test_alert_fires_only_after_k_of_the_last_n_batches(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url], k=2, n=3)
    assert feed(ws, [True, False, True, True, False, False, True]) == [2, 3]
    with Session(ws.engine) as s:
        checks = list(s.exec(select(AlertCheck).order_by(AlertCheck.id)))
    assert [c.breached for c in checks] == [True, False, True, True, False, False, True]
    assert [c.fired for c in checks] == [False, False, True, True, False, False, False]


def test_cooldown_keeps_the_next_batches_quiet(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url], cooldown=2)
    assert feed(ws, [True] * 7) == [0, 3, 6]


def test_one_alert_per_rule_model_and_batch(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url])
    assert feed(ws, [True, True, True], same_batch=True) == [0]
    with Session(ws.engine) as s:
        assert len(list(s.exec(select(Alert)))) == 1
    assert len(inbox.received) == 1


def test_disabled_rule_records_nothing_and_never_fires(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url], on_drift=False)
    assert feed(ws, [True, True]) == []
    with Session(ws.engine) as s:
        assert not list(s.exec(select(AlertCheck)))


def test_alert_is_delivered_to_a_loopback_json_endpoint(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url])
    out = alerts.evaluate(ws, "run-1", "batch-1", [Check("drop", True, "realised roc_auc 0.61, 0.74 at training", 0.61)])
    assert len(out) == 1 and out[0]["delivered"] is True and out[0]["severity"] == "critical"
    (post,) = inbox.received
    assert post["path"] == "/hook"
    assert "performance drop" in post["title"] and "m" in post["title"]
    assert "0.61" in post["message"] and f"keel alerts ack {out[0]['id']}" in post["message"]


def test_delivery_failure_is_recorded_and_never_raises(keel_home):
    ws = workspace(keel_home, [dead_url()])
    (out,) = alerts.evaluate(ws, "run-1", "batch-1", [Check("failure", True, "run failed: boom")])
    assert out["delivered"] is False and out["delivery_error"]
    ws2 = workspace(keel_home, ["this is not a url"])
    (bad,) = alerts.evaluate(ws2, "run-2", "batch-2", [Check("failure", True, "run failed: boom")])
    assert bad["delivered"] is False and "not a URL Apprise understands" in bad["delivery_error"]
    with Session(ws.engine) as s:
        stored = list(s.exec(select(Alert)))
    assert len(stored) == 2 and not any(a.delivered for a in stored), "undelivered alerts are still stored"


def test_acknowledgement_is_stored_audited_and_idempotent(keel_home, inbox):
    ws = workspace(keel_home, [inbox.url])
    (a,) = alerts.evaluate(ws, "run-1", "batch-1", [Check("quarantine", True, "batch quarantined")])
    assert [r["id"] for r in alerts_page(ws.engine)["rows"]] == [a["id"]]
    done = alerts.acknowledge(ws.engine, a["id"], "oncall", "known upstream outage")
    assert done["already"] is False and done["acked_by"] == "oncall" and done["ack_reason"] == "known upstream outage"
    assert alerts_page(ws.engine)["rows"] == [] and len(alerts_page(ws.engine, open_only=False)["rows"]) == 1
    again = alerts.acknowledge(ws.engine, a["id"], "someone-else", "late")
    assert again["already"] is True and again["acked_by"] == "oncall"
    with Session(ws.engine) as s:
        events = list(s.exec(select(AuditEvent).where(AuditEvent.action == "alert:ack")))
    assert len(events) == 1 and events[0].actor == "oncall" and events[0].details["alert_id"] == a["id"]
    from keel.core.errors import NotFound

    with pytest.raises(NotFound):
        alerts.acknowledge(ws.engine, 999, "oncall")

"""A registry decision whose commit reached PostgreSQL but whose reply was lost on the way back (the connection
dropped in between) is done once: the retried transaction finds that it committed, returns what it made, and
neither refuses itself as a conflict nor writes a second audit event.

A loopback proxy between keel and the test PostgreSQL forwards everything, except that once armed it lets a
registry transaction's COMMIT through, waits for the server's "COMMIT" reply and then closes the client's
connection instead of passing that reply on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import registry_world as world
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from keel.core.registry import audit
from keel.core.registry import transactions as registry
from keel.core.store.models import Alias, AuditEvent, ModelVersion, Review
from tests.postgres_db import fresh_database

COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the simple query psycopg2 sends to commit
COMMITTED = b"COMMIT\x00"  # the server's CommandComplete tag for it
REGISTRY_WRITE = b"INSERT INTO audit_event"  # every registry transaction appends an audit event


class ReplyDropper:
    """A TCP proxy to PostgreSQL that drops the reply to the next registry transaction's COMMIT, once armed."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = 0
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        with self.lock:
            self.armed += 1

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            state = {"writing": False, "committing": False}
            threading.Thread(target=self._from_client, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._from_server, args=(server, client, state), daemon=True).start()

    def _from_client(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        tail = b""
        try:
            while data := client.recv(65536):
                seen, tail = tail + data, (tail + data)[-64:]
                with self.lock:
                    if self.armed and REGISTRY_WRITE in seen:
                        state["writing"] = True
                    if state["writing"] and COMMIT in seen:
                        state["committing"] = True
                server.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _from_server(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := server.recv(65536):
                with self.lock:
                    if state["committing"] and COMMITTED in data:  # the server committed: the client never hears it
                        self.armed -= 1
                        self.dropped += 1
                        state["writing"] = state["committing"] = False
                        break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def close(self) -> None:
        self.listener.close()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@pytest.fixture
def through_proxy(keel_home, monkeypatch) -> Iterator[ReplyDropper]:
    """The registry's store on a fresh PostgreSQL database, reached through the proxy."""
    with fresh_database() as url:
        direct = make_url(url)
        proxy = ReplyDropper((direct.host or "127.0.0.1", direct.port or 5432))
        via = direct.set(host="127.0.0.1", port=proxy.port, query={**direct.query, "sslmode": "disable"})
        monkeypatch.setenv("KEEL_DATABASE_URL", via.render_as_string(hide_password=False))
        monkeypatch.setenv("KEEL_STORE_RETRIES", "3")
        try:
            yield proxy
        finally:
            proxy.close()


def _actions(ws) -> list[tuple[str, int | None]]:  # noqa: ANN001
    with ws.session() as session:
        return [(e.action, e.version) for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


def _production(ws) -> int:  # noqa: ANN001
    with ws.session() as session:
        alias = session.get(Alias, ("churn", "production"))
        return session.get(ModelVersion, alias.model_version_id).version


def test_registry_decisions_whose_commit_replies_are_lost_are_done_once(through_proxy, keel_home, caplog):
    config = world.build(keel_home.parent, versions=4)
    ws = world.workspace(config)
    registry.promote(ws, "churn", 1, "first", actor="ann")
    before = _actions(ws)

    through_proxy.arm()
    decision = registry.promote(ws, "churn", 2, "better", actor="ann")
    assert through_proxy.dropped == 1, "the proxy dropped the reply to the promotion's commit"
    assert decision.model_version.version == 2 and decision.model_version.status == "production"
    assert _production(ws) == 2

    through_proxy.arm()
    decision = registry.rollback(ws, "churn", "v2 misbehaves", actor="ben")
    assert through_proxy.dropped == 2
    assert decision.model_version.version == 1 and _production(ws) == 1

    registry.open_review(ws, "churn", 3, ["ambiguous"], None, None, actor="keel (pipeline)")
    through_proxy.arm()
    decision = registry.reject(ws, "churn", 3, "not convincing", actor="cat")
    assert through_proxy.dropped == 3
    assert decision.model_version.status == "rejected"

    registry.open_review(ws, "churn", 4, ["ambiguous"], None, None, actor="keel (pipeline)")
    through_proxy.arm()
    decision = registry.approve(ws, "churn", 4, "looks right", actor="dan")
    assert through_proxy.dropped == 4
    assert decision.model_version.version == 4 and decision.review is not None
    assert decision.review.status == "approved" and _production(ws) == 4

    assert caplog.text.count("trying again") >= 4, "each lost reply made the unit try again"
    assert _actions(ws)[len(before):] == [
        ("promote", 2), ("rollback", 1), ("review", 3), ("reject", 3), ("review", 4), ("approve", 4),
        ("promote", 4)], "each decision appears once in the audit chain"
    assert audit.verify(ws.engine).ok
    with ws.session() as session:
        reviews = {r.candidate_version_id: r.status for r in session.exec(select(Review))}
        assert sorted(reviews.values()) == ["approved", "rejected"]

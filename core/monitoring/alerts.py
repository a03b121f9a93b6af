"""Alert rules and delivery: persistence (k of the last n batches), cool-down, de-duplication, Apprise.

Every evaluation of a rule on a run is kept as an ``alert_check`` row, so "why did this (not) page?"
has an answer in the store. An alert fires when the current batch breaches the rule, at least k of
the rule's last n evaluated batches breached it, the rule is out of its cool-down, and no alert of
the same rule, model and batch exists yet. Delivery failures are recorded on the alert, never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from keel.core.config import AlertsConfig
from keel.core.errors import NotFound, mask_secrets
from keel.core.faults import crash_point
from keel.core.store.engine import insert_ignore, session_scope, unit_of_work
from keel.core.store.models import Alert, AlertCheck, utcnow
from keel.core.store.queries import alert_row
from keel.core.workspace import Workspace

log = logging.getLogger(__name__)

RULES = ("drift", "prediction_drift", "feature_drift", "drop", "estimated_drop", "failure", "quarantine")
SEVERITY = {"drift": "warning", "prediction_drift": "warning", "feature_drift": "info", "drop": "critical",
            "estimated_drop": "warning", "failure": "critical", "quarantine": "warning"}
TITLES = {"drift": "drift of the features the model relies on", "prediction_drift": "prediction drift",
          "feature_drift": "feature drift", "drop": "performance drop",
          "estimated_drop": "estimated performance drop", "failure": "pipeline failure",
          "quarantine": "batch quarantined"}


@dataclass(frozen=True)
class Check:
    """One rule's verdict on one run: breached or not, the value behind it and what it means."""

    rule: str
    breached: bool
    message: str
    value: float | None = None


ALREADY_FIRED = "already fired for this run"


def enabled(cfg: AlertsConfig, rule: str) -> bool:
    return bool(getattr(cfg, f"on_{rule}"))


def _decide(session: Session, cfg: AlertsConfig, model: str, run_id: str, dataset_id: str | None,
            check: Check) -> tuple[AlertCheck, str | None]:
    """Record the check; return it with why it does not fire (None: it fires)."""
    insert_ignore(session, AlertCheck, [{
        "rule": check.rule, "model_name": model, "run_id": run_id, "dataset_id": dataset_id,
        "breached": check.breached, "fired": False, "value": check.value, "detail": check.message,
        "at": utcnow()}])
    row = session.exec(select(AlertCheck).where(AlertCheck.rule == check.rule, AlertCheck.model_name == model,
                                                AlertCheck.run_id == run_id)).one()
    if not row.fired and (row.breached, row.value) != (check.breached, check.value):
        row.breached, row.value, row.detail = check.breached, check.value, check.message  # labels came later
        session.add(row)
        session.flush()
    if row.fired:
        return row, ALREADY_FIRED
    if not row.breached:
        return row, "not breached"
    mine = (AlertCheck.rule == check.rule, AlertCheck.model_name == model)
    recent = session.exec(select(AlertCheck.breached).where(*mine, col(AlertCheck.id) <= row.id)
                          .order_by(col(AlertCheck.id).desc()).limit(cfg.persist_n)).all()
    if sum(recent) < cfg.persist_k:
        return row, f"breached in {sum(recent)} of the last {len(recent)} batches (needs {cfg.persist_k} of {cfg.persist_n})"
    last = session.exec(select(func.max(AlertCheck.id)).where(*mine, AlertCheck.fired == True,  # noqa: E712
                                                              col(AlertCheck.id) < row.id)).one()
    if last is not None and cfg.cooldown:
        since = session.exec(select(func.count()).select_from(AlertCheck).where(
            *mine, col(AlertCheck.id) > last, col(AlertCheck.id) <= row.id)).one()
        if since <= cfg.cooldown:
            return row, f"in cool-down ({since} of {cfg.cooldown} batches since the last alert)"
    return row, None


def evaluate(ws: Workspace, run_id: str, dataset_id: str | None, checks: list[Check],
             context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Record every enabled rule's check on this run; store, deliver and return the alerts that fire."""
    fired = _record_checks(ws, run_id, dataset_id, checks, context)
    crash_point("alerts:stored")
    out = []
    for alert in fired:  # delivery happens outside the transaction: no network inside a write lock
        ok, error = deliver(ws.cfg.alerts.urls, _title(alert), _body(alert))
        out.append(_record_delivery(ws, alert.id or 0, ok, error))  # its own unit: a retry never sends twice
    return out


@unit_of_work
def _record_checks(ws: Workspace, run_id: str, dataset_id: str | None, checks: list[Check],
                   context: dict[str, Any] | None) -> list[Alert]:
    """Every enabled rule's check on this run, in one transaction; the alerts to send (new, or stored by a killed
    run and never sent)."""
    cfg, model = ws.cfg.alerts, ws.cfg.model
    fired: list[Alert] = []
    with ws.session() as session:
        for check in checks:
            if not enabled(cfg, check.rule):
                continue
            row, why_not = _decide(session, cfg, model, run_id, dataset_id, check)
            key = (Alert.rule == check.rule, Alert.model_name == model,
                   Alert.dataset_id == dataset_id if dataset_id is not None else Alert.run_id == run_id)
            if why_not == ALREADY_FIRED:  # by this run, or by the killed run it carries on: delivered yet?
                stored = session.exec(select(Alert).where(*key)).first()
                if stored is not None and not stored.delivered and stored.delivery_error is None:
                    fired.append(stored)  # stored, then the run was killed before it was sent: send it now
                continue
            if why_not is not None:
                continue
            if session.exec(select(Alert.id).where(*key)).first() is not None:
                continue  # this rule already alerted on this batch: one page per problem
            alert = Alert(rule=check.rule, model_name=model, dataset_id=dataset_id, run_id=run_id,
                          severity=SEVERITY[check.rule], message=check.message,
                          details={"value": check.value, **(context or {})})
            session.add(alert)
            row.fired = True
            session.add(row)
            session.flush()
            fired.append(alert)
    return fired


@unit_of_work
def _record_delivery(ws: Workspace, alert_id: int, ok: bool, error: str | None) -> dict[str, Any]:
    with ws.session() as session:
        stored = session.get(Alert, alert_id)
        assert stored is not None
        stored.delivered, stored.delivery_error = ok, error
        session.add(stored)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in alert_row(stored).items()}


def _title(alert: Alert) -> str:
    return f"keel [{alert.severity}] {alert.model_name}: {TITLES.get(alert.rule, alert.rule)}"


def _body(alert: Alert) -> str:
    return (f"{alert.message}\n\nalert {alert.id} · rule {alert.rule} · run {(alert.run_id or '-')[:8]}"
            f" · batch {(alert.dataset_id or '-')[:12]}\nacknowledge: keel alerts ack {alert.id} --reason '...'")


def deliver(urls: list[str], title: str, body: str) -> tuple[bool, str | None]:
    """Send through every Apprise URL; (True, None) when all took it, else (False, why). Never raises.

    Apprise's own log lines are captured, not printed: the reason is kept on the alert, and the terminal of the
    run that raised the alert is not the place for them."""
    if not urls:
        return False, "no [alerts] urls configured"
    quiet = logging.getLogger("apprise")
    propagate, quiet.propagate = quiet.propagate, False
    try:
        import apprise

        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            ap = apprise.Apprise()
            bad = [i for i, url in enumerate(urls) if not ap.add(url)]
            if bad:
                return False, f"[alerts] urls entry {bad[0] + 1} is not a URL Apprise understands"
            ok = bool(ap.notify(title=title, body=body))
            logs = captured.getvalue().strip() if hasattr(captured, "getvalue") else ""
        if ok:
            return True, None
        return False, (mask_secrets(logs.splitlines()[-1])[:500] if logs else "delivery failed")
    except Exception as exc:  # delivery must never fail the run
        log.warning("alert delivery failed: %s", mask_secrets(str(exc)))
        return False, mask_secrets(f"{type(exc).__name__}: {exc}")[:500]
    finally:
        quiet.propagate = propagate


# --- reading and acknowledging -------------------------------------------------------------------


@unit_of_work
def acknowledge(engine: Engine, alert_id: int, actor: str, reason: str | None = None) -> dict[str, Any]:
    """Acknowledge one alert, audited; acknowledging twice keeps the first and says so."""
    from keel.core.registry import audit
    with session_scope(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id} (see 'keel alerts --all')")
        if alert.acked_at is not None:
            return {**alert_row(alert), "already": True}
        alert.acked_by, alert.acked_at, alert.ack_reason = actor, utcnow(), reason
        session.add(alert)
        audit.append(session, actor, "alert:ack", alert.model_name, None, reason,
                     {"alert_id": alert.id, "rule": alert.rule, "run_id": alert.run_id})
        session.flush()
        return {**alert_row(alert), "already": False}

"""The Prometheus view of the store (`keel metrics serve`): the latest value of every metric and open alerts."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from keel.core.store.engine import unit_of_work
from keel.core.store.models import Alert, MetricPoint, ModelVersion, utcnow

log = logging.getLogger(__name__)


# --- Prometheus ----------------------------------------------------------------------------------


@unit_of_work
def latest_points(engine: Engine) -> list[dict[str, Any]]:
    """The newest point of every (model, scope, metric), with its model version."""
    with Session(engine) as session:
        newest = select(func.max(MetricPoint.id)).group_by(MetricPoint.model_name, MetricPoint.scope, MetricPoint.name)
        points = session.exec(select(MetricPoint).where(col(MetricPoint.id).in_(newest))).all()
        versions = dict(session.exec(select(ModelVersion.id, ModelVersion.version).where(
            col(ModelVersion.id).in_({p.model_version_id for p in points}))).all()) if points else {}
        return [{"model": p.model_name, "version": versions.get(p.model_version_id), "scope": p.scope, "metric": p.name,
                 "value": p.value, "lower": p.lower, "upper": p.upper, "alert": p.alert, "at": p.at} for p in points]


@unit_of_work
def open_alert_counts(engine: Engine) -> list[tuple[str, str, str, int]]:
    with Session(engine) as session:
        return list(session.exec(select(Alert.model_name, Alert.rule, Alert.severity, func.count()).where(
            Alert.acked_at == None).group_by(Alert.model_name, Alert.rule, Alert.severity)).all())  # noqa: E711


class StoreCollector:
    """A prometheus_client collector that reads the store on every scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["model", "version", "scope", "metric"]
        value = GaugeMetricFamily("keel_metric", "Latest value of a keel metric point", labels=labels)
        lower = GaugeMetricFamily("keel_metric_lower", "Lower alert threshold of the latest point", labels=labels)
        upper = GaugeMetricFamily("keel_metric_upper", "Upper alert threshold of the latest point", labels=labels)
        flag = GaugeMetricFamily("keel_metric_alert", "1 when the latest point is past its threshold", labels=labels)
        ts = GaugeMetricFamily("keel_metric_timestamp_seconds", "When the latest point was recorded", labels=labels)
        for p in latest_points(self.engine):
            if p["value"] is None:
                continue
            key = [p["model"], str(p["version"]), p["scope"], p["metric"]]
            value.add_metric(key, float(p["value"]))
            flag.add_metric(key, 1.0 if p["alert"] else 0.0)
            ts.add_metric(key, p["at"].timestamp())
            if p["lower"] is not None:
                lower.add_metric(key, float(p["lower"]))
            if p["upper"] is not None:
                upper.add_metric(key, float(p["upper"]))
        alerts = GaugeMetricFamily("keel_alerts_open", "Unacknowledged alerts", labels=["model", "rule", "severity"])
        for model, rule, severity, n in open_alert_counts(self.engine):
            alerts.add_metric([model, rule, severity], float(n))
        up = GaugeMetricFamily("keel_exporter_scrape_timestamp_seconds", "When keel read the store")
        up.add_metric([], utcnow().timestamp())
        yield from (value, lower, upper, flag, ts, alerts, up)


def serve_metrics(engine: Engine, host: str = "127.0.0.1", port: int = 9108) -> tuple[Any, Any]:
    """Serve the Prometheus text format on host:port in a daemon thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine))
    return start_http_server(port, addr=host, registry=registry)

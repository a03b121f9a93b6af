"""deploy/: the Grafana dashboard's SQL run against a real keel store on PostgreSQL, and the Prometheus config.

Grafana sends a panel's SQL to PostgreSQL in two steps, and this file does the same: the browser replaces
the template variables (the SQL data source quotes each value of a multi-value variable, 'a','b'), then the
server replaces the macros ($__time(col) -> col AS "time", $__timeFilter(col) -> col BETWEEN '<from>' AND
'<to>' in RFC 3339 UTC; an unknown macro fails the query). Every query of the dashboard (panels, template
variables, annotations) goes through both and runs on a store that keel's own functions filled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import postgres_db
import pytest
import yaml
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "keel-dashboard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus"
PG_TYPE = "grafana-postgresql-datasource"
DS_REF = {"type": PG_TYPE, "uid": "${DS}"}


# --- Grafana's two substitution steps -----------------------------------------------------------------

# templateSrv's variable syntax: $name, [[name:format]], ${name.field:format}
_TEMPLATE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
# the PostgreSQL macro engine's pattern: $__name(args), args without parentheses
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def rfc3339(at: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction dropped, 'Z' for UTC."""
    at = at.astimezone(UTC)
    frac = f"{at.microsecond:06d}".rstrip("0")
    return at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def interpolate(sql: str, variables: dict[str, list[str]]) -> str:
    """The browser's step for multi-value / include-All variables (all of the dashboard's query variables)."""

    def one(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(2) or m.group(4), m.group(3) or m.group(6)
        if name not in variables:
            return m.group(0)  # a macro or a built-in: left for the server
        values = variables[name]
        if fmt == "raw":
            return ",".join(values)
        assert fmt is None, f"this emulation does not know the variable format {fmt!r}"
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)

    return _TEMPLATE.sub(one, sql)


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """The server's step: grafana-postgresql-datasource's macro engine."""

    def one(m: re.Match[str]) -> str:
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(start)}' AND '{rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{rfc3339(end)}'"
        raise AssertionError(f"macro ${name} is not emulated here (Grafana answers 'unknown macro' to a typo)")

    return _MACRO.sub(one, sql)


def grafana_sql(sql: str, variables: dict[str, list[str]], start: datetime, end: datetime) -> str:
    out = expand_macros(interpolate(sql, variables), start, end)
    assert "$" not in out, f"left unreplaced: {out}"
    return out


@dataclass(frozen=True)
class Query:
    where: str  # "panel <title>", "variable <name>", "annotation <name>"
    sql: str
    format: str  # "time_series" | "table"
    panel: dict[str, Any] | None = None


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[Query]:
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            out.append(Query(f"panel {panel['title']}", target["rawSql"], target["format"], panel))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            sql = var["query"] if isinstance(var["query"], str) else var["query"]["rawSql"]
            out.append(Query(f"variable {var['name']}", sql, "table"))
    for ann in dashboard["annotations"]["list"]:
        if ann.get("target", {}).get("rawSql"):
            out.append(Query(f"annotation {ann['name']}", ann["target"]["rawSql"], ann["target"]["format"]))
    return out


def query(where: str) -> Query:
    found = [q for q in queries(load_dashboard()) if q.where == where]
    assert len(found) == 1, f"{where}: {len(found)} queries"
    return found[0]


def run(engine: Engine, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The SQL as Grafana sends it: one statement on the driver, no parameters."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        rows = [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cur.fetchall()]
        return names, rows
    finally:
        raw.rollback()
        raw.close()


def utc(at: datetime | None) -> datetime | None:
    """A stored time as an aware UTC time (a naive one is UTC: Grafana reads it so)."""
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# --- the store: keel's own writes on a database of its own ----------------------------------------------


def fresh_database() -> Any:
    return postgres_db.fresh_database("keel_dash")


MODEL, OTHER = "churn", "fraud"
WEEKS = [datetime(2026, 1, 7, 23, 0, tzinfo=UTC) + timedelta(weeks=i) for i in range(4)]
OTHER_TIME = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
MAX_DROP = 0.02
TRAIN = {"accuracy": 0.80, "roc_auc": 0.85, "f1": 0.60, "log_loss": 0.45}
# realised on the three labelled batches (the fourth has no labels yet); the third is worse on every metric
REALISED = [
    {"accuracy": 0.81, "roc_auc": 0.84, "f1": 0.61, "log_loss": 0.44, "n": 1000, "positives": 200},
    {"accuracy": 0.79, "roc_auc": 0.835, "f1": 0.59, "log_loss": 0.46, "n": 1000, "positives": 250},
    {"accuracy": 0.70, "roc_auc": 0.76, "f1": 0.50, "log_loss": 0.55, "n": 800, "positives": 240},
]
ESTIMATES = [
    {"accuracy": 0.805, "roc_auc": 0.845, "positive_rate": 0.21},
    {"accuracy": 0.79, "roc_auc": 0.84, "positive_rate": 0.23},
    {"accuracy": 0.76, "roc_auc": 0.81, "positive_rate": 0.26},
    {"accuracy": 0.74, "roc_auc": 0.79, "positive_rate": 0.31},
]
FEATURES = ["tenure", "spend", "plan", "region"]
DRIFTED = [[], ["spend"], ["spend", "plan"], ["spend", "plan", "tenure"]]  # shares 0, 1/4, 2/4, 3/4


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _workspace(root: Path, model: str, settings: Any) -> Any:
    from keel.core.workspace import Workspace

    path = root / f"{model}.toml"
    path.write_text(f'model = "{model}"\ntarget = "label"\n[monitor]\nmax_drop = {MAX_DROP}\n')
    return Workspace.open(path, settings)


def _dataset(ws: Any, name: str, kind: str, data_to: datetime | None) -> str:
    from keel.core.store import records

    ds = _sha(f"{ws.cfg.model}/{name}")
    records.register_dataset(ws, {
        "id": ds, "kind": kind, "source": f"{name}.parquet", "format": "parquet", "rows": 1000,
        "labelled_rows": 1000, "columns": FEATURES + ["label"], "artifact_uri": f"datasets/{ds}.parquet",
        "data_from": None if data_to is None else data_to - timedelta(days=6), "data_to": data_to})
    return ds


def _version(ws: Any, train_id: str) -> int:
    from keel.core.store import records

    mv = records.register_model(ws, {
        "model_name": ws.cfg.model, "train_dataset_id": train_id, "params_hash": _sha("params"),
        "code_hash": _sha("code"), "features": FEATURES, "artifact_sha256": _sha("artifact"),
        "artifact_uri": "models/m.txt", "train_metrics": TRAIN})
    assert mv.id is not None
    return mv.id


def _report(drifted: list[str], features: list[str]) -> dict[str, Any]:
    return {"engine": "scipy", "correction": "bonferroni", "detected": bool(drifted), "n_reference": 1000,
            "n_current": 1000, "features": [
                {"name": f, "kind": "numeric", "test": "ks", "statistic": 0.3 if f in drifted else 0.01,
                 "p_value": 1e-6 if f in drifted else 0.8, "p_corrected": 4e-6 if f in drifted else 1.0,
                 "effect_size": 0.4 if f in drifted else 0.01, "effect_metric": "wasserstein_norm",
                 "drifted": f in drifted, "importance_rank": i + 1} for i, f in enumerate(features)]}


def build_store(root: Path, settings: Any) -> dict[str, Any]:
    """Two models' batches through keel's store writes, thresholds, drift records and alert rules."""
    from keel.core.monitoring import alerts
    from keel.core.monitoring.thresholds import store_points, thresholds
    from keel.core.store import records

    limits = thresholds(TRAIN, MAX_DROP)
    ws = _workspace(root, MODEL, settings)
    train = _dataset(ws, "train", "train", None)
    mv = _version(ws, train)
    fired: dict[str, list[dict[str, Any]]] = {}
    batches = []
    for i, week in enumerate(WEEKS):
        ds = _dataset(ws, f"batch-{i}", "batch", week)
        run_id = records.start_run(ws, f"batch-{i}.parquet", None)
        records.update_run(ws, run_id, batch_id=ds, production_before=mv)
        batches.append(ds)
        store_points(ws, mv, ds, "estimate", ESTIMATES[i], run_id, limits)
        records.record_drift(ws, ds, train, "s", run_id, _report(DRIFTED[i], FEATURES))
        checks = [alerts.Check("drift", bool(DRIFTED[i]), f"{len(DRIFTED[i])} feature(s) drifted on batch-{i}",
                               float(len(DRIFTED[i])))]
        if i < len(REALISED):
            store_points(ws, mv, ds, "batch", REALISED[i], run_id, limits)
            checks.append(alerts.Check("drop", REALISED[i]["roc_auc"] < TRAIN["roc_auc"] - MAX_DROP,
                                       f"realised roc_auc {REALISED[i]['roc_auc']} on batch-{i}",
                                       REALISED[i]["roc_auc"]))
        fired[ds] = alerts.evaluate(ws, run_id, ds, checks)
        records.finish_run(ws, run_id, "completed")
    failed = records.start_run(ws, "missing.parquet", None)  # failed before it read a batch: no batch time
    records.finish_run(ws, failed, "failed", error="no such file")
    failure = alerts.evaluate(ws, failed, None, [alerts.Check("failure", True, "run on missing.parquet failed")])
    acked = fired[batches[1]][0]
    alerts.acknowledge(ws.engine, acked["id"], "ops", "looked at it")

    other = _workspace(root, OTHER, settings)
    other_train = _dataset(other, "train", "train", None)
    other_mv = _version(other, other_train)
    other_ds = _dataset(other, "batch-0", "batch", OTHER_TIME)
    other_run = records.start_run(other, "batch-0.parquet", None)
    store_points(other, other_mv, other_ds, "batch", {"roc_auc": 0.9, "accuracy": 0.95}, other_run, limits)
    store_points(other, other_mv, other_ds, "estimate", {"roc_auc": 0.88}, other_run, limits)
    records.record_drift(other, other_ds, other_train, "s", other_run, _report(["amount"], ["amount", "country"]))
    alerts.evaluate(other, other_run, other_ds, [alerts.Check("drift", True, "amount drifted", 1.0)])
    return {"ws": ws, "limits": limits, "batches": batches, "fired": fired, "failure": failure[0], "acked": acked}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from keel.core.config import Settings

    with fresh_database() as url:
        root = tmp_path_factory.mktemp("dashboard")
        world = build_store(root, Settings(home=root / ".keel", database_url=url))
        yield {**world, "url": url}


def panel_rows(store: dict[str, Any], where: str, start: datetime = START, end: datetime = END,
               **variables: list[str]) -> tuple[list[str], list[tuple[Any, ...]]]:
    q = query(where)
    names, rows = run(store["ws"].engine, grafana_sql(q.sql, {"model": [MODEL], **variables}, start, end))
    if q.format == "time_series":
        rows = [(utc(r[0]), *r[1:]) for r in rows]
    return names, rows


# --- the dashboard's JSON -----------------------------------------------------------------------------


def test_dashboard_is_a_grafana_json_model_with_a_postgres_data_source_variable():
    dash = load_dashboard()
    assert isinstance(dash["schemaVersion"], int) and 39 <= dash["schemaVersion"] <= 42  # Grafana 11 and 12
    assert dash["uid"] and dash["title"] and dash["id"] is None
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS"]["type"] == "datasource" and variables["DS"]["query"] == PG_TYPE
    model = variables["model"]
    assert model["type"] == "query" and model["datasource"] == DS_REF and "model_name" in model["query"]
    for var in variables.values():
        if var["type"] == "query":  # quoted by Grafana only when multi-value or include-All: `IN ($x)` needs it
            assert var["datasource"] == DS_REF and var["multi"] and var["includeAll"], var["name"]
    for ann in dash["annotations"]["list"]:
        if "target" in ann:
            assert ann["datasource"] == DS_REF and ann["target"]["datasource"] == DS_REF


def test_every_panel_has_the_data_source_and_a_query_and_fits_the_grid():
    dash = load_dashboard()
    variables = {v["name"] for v in dash["templating"]["list"]}
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    shown = [p for p in panels(dash) if p["type"] != "row"]
    assert {p["type"] for p in shown} <= {"timeseries", "table", "stat"}
    assert len(shown) >= 7
    for panel in shown:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF and target["rawQuery"] and target["editorMode"] == "code"
            assert target["format"] in ("time_series", "table")
            assert target["rawSql"].strip()
        if "repeat" in panel:
            assert panel["repeat"] in variables and f"${panel['repeat']}" in panel["title"]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert rows and rows[0]["repeat"] == "model", "one row of panels per model"


def test_every_query_is_per_model_and_every_time_series_is_by_batch_time():
    qs = queries(load_dashboard())
    names = {v["name"] for v in load_dashboard()["templating"]["list"]}
    assert len(qs) >= 10
    for q in qs:
        used = {m.group(1) or m.group(2) or m.group(4) for m in _TEMPLATE.finditer(q.sql)}
        assert used - {"__time", "__timeFilter"} <= names, f"{q.where}: {used}"
        if q.where != "variable model":
            assert "IN ($model)" in q.sql, f"{q.where} is not filtered to $model"
        if q.format == "time_series":
            assert "$__time(batch_time)" in q.sql and "$__timeFilter(batch_time)" in q.sql, q.where
            assert "ORDER BY batch_time" in q.sql, f"{q.where}: Grafana needs time series sorted by time"


# --- every query on the real store ----------------------------------------------------------------------


def check_every_query(engine: Engine, start: datetime, end: datetime, model: str, nonempty: bool = True) -> int:
    """Run every query of the dashboard as Grafana would: the variables from their own queries, the row once
    per model, a repeated panel once per value of its variable. Returns how many queries ran."""
    dash = load_dashboard()
    _, models = run(engine, grafana_sql(query("variable model").sql, {}, start, end))
    everything = {"model": [m for (m,) in models]}
    assert model in everything["model"]
    for name in ("metric", "estimated"):
        _, found = run(engine, grafana_sql(query(f"variable {name}").sql, everything, start, end))
        everything[name] = [v for (v,) in found]
        assert everything[name], f"variable {name} lists nothing"
    ran = 0
    for q in queries(dash):
        repeat = (q.panel or {}).get("repeat")
        for value in everything[repeat] if repeat and repeat != "model" else [None]:
            for each in everything["model"]:
                variables = {**everything, "model": [each]}
                if value is not None:
                    variables[repeat] = [value]  # each repeated panel has one value, quoted on its own
                names, rows = run(engine, grafana_sql(q.sql, variables, start, end))
                ran += 1
                if q.format == "time_series":
                    assert "time" in names, q.where
                    times = [utc(r[names.index("time")]) for r in rows]
                    assert None not in times and times == sorted(times), f"{q.where}: not sorted by time"
                    for r in rows:
                        for name, v in zip(names, r, strict=True):
                            if name not in ("time", "metric"):
                                assert v is None or isinstance(v, int | float), f"{q.where}: {name} = {v!r}"
                for override in (q.panel or {}).get("fieldConfig", {}).get("overrides", []):
                    if override["matcher"]["id"] == "byName":
                        assert override["matcher"]["options"] in names, f"{q.where}: no column {override}"
                if nonempty and q.where.startswith("panel") and each == model:
                    assert rows, f"{q.where} ({value}) is empty on {model}"
    return ran


@pytest.mark.postgres
def test_every_query_runs_on_the_store_and_gives_grafana_the_columns_it_needs(store):
    assert check_every_query(store["ws"].engine, START, END, MODEL) > 20


@pytest.mark.postgres
def test_model_variable_lists_the_store_models_and_metric_variables_those_monitored(store):
    engine = store["ws"].engine
    _, rows = run(engine, grafana_sql(query("variable model").sql, {}, START, END))
    assert rows == [(MODEL,), (OTHER,)]
    _, rows = run(engine, grafana_sql(query("variable metric").sql, {"model": [MODEL]}, START, END))
    assert [r[0] for r in rows] == sorted(TRAIN), "the metrics stored with a threshold (not n, not positives)"
    _, rows = run(engine, grafana_sql(query("variable estimated").sql, {"model": [MODEL]}, START, END))
    assert [r[0] for r in rows] == sorted(ESTIMATES[0])
    _, rows = run(engine, grafana_sql(query("variable metric").sql, {"model": [MODEL, OTHER]}, START, END))
    assert [r[0] for r in rows] == sorted(TRAIN)


@pytest.mark.postgres
@pytest.mark.parametrize("metric", sorted(TRAIN))
def test_metric_panel_is_the_stored_series_with_its_thresholds(store, metric):
    names, rows = panel_rows(store, "panel $metric against its thresholds", metric=[metric])
    assert names == ["time", "value", "lower threshold", "upper threshold", "breached"]
    lower, upper = store["limits"][metric]
    expected = []
    for week, values in zip(WEEKS, REALISED, strict=False):
        v = values[metric]
        bad = (lower is not None and v < lower) or (upper is not None and v > upper)
        expected.append((week, v, lower, upper, v if bad else None))
    assert len(rows) == 3, "the three labelled batches; the fourth has no realised metrics yet"
    for got, want in zip(rows, expected, strict=True):
        assert got[0] == want[0]
        assert got[1:] == pytest.approx(want[1:])
    assert rows[2][4] == pytest.approx(REALISED[2][metric]), "the worst batch is drawn as a breach"
    assert all(r[4] is None for r in rows[:2])


@pytest.mark.postgres
def test_metric_panel_follows_the_time_range_and_the_model(store):
    _, rows = panel_rows(store, "panel $metric against its thresholds", datetime(2026, 1, 10, tzinfo=UTC),
                         datetime(2026, 1, 22, tzinfo=UTC), metric=["roc_auc"])
    assert [r[0] for r in rows] == WEEKS[1:3]
    q = query("panel $metric against its thresholds")
    _, rows = run(store["ws"].engine, grafana_sql(q.sql, {"model": [OTHER], "metric": ["roc_auc"]}, START, END))
    assert [(utc(r[0]), r[1]) for r in rows] == [(OTHER_TIME, pytest.approx(0.9))]


@pytest.mark.postgres
@pytest.mark.parametrize("metric", sorted(ESTIMATES[0]))
def test_estimate_panel_sets_the_label_free_estimate_against_the_realised_value(store, metric):
    names, rows = panel_rows(store, "panel $estimated: estimate without labels against realised",
                             estimated=[metric])
    assert names == ["time", "estimated (no labels)", "realised (labels)", "lower threshold", "upper threshold"]
    lower, upper = store["limits"].get(metric, (None, None))
    assert [r[0] for r in rows] == WEEKS, "every scored batch has its estimate"
    for i, row in enumerate(rows):
        if i < len(REALISED):
            r = REALISED[i]
            realised = r["positives"] / r["n"] if metric == "positive_rate" else r[metric]
        else:
            realised = None  # no labels yet: the estimate alone
        assert row[1:] == pytest.approx((ESTIMATES[i][metric], realised, lower, upper)), (metric, i)


@pytest.mark.postgres
def test_drift_panels_show_the_share_of_drifted_features_per_batch(store):
    names, rows = panel_rows(store, "panel Drifted share of features")
    assert names == ["time", "drifted share of features"]
    assert rows == [(w, pytest.approx(len(d) / len(FEATURES))) for w, d in zip(WEEKS, DRIFTED, strict=True)]
    _, rows = panel_rows(store, "panel Drifted share of features", model=[OTHER])
    assert rows == [(OTHER_TIME, pytest.approx(0.5))]
    names, rows = panel_rows(store, "panel Drifted features")
    assert names[:3] == ["batch time", "feature", "test"]
    want = [(w, f) for w, d in reversed(list(zip(WEEKS, DRIFTED, strict=True)))
            for f in sorted(d, key=FEATURES.index)]
    assert [(utc(r[0]), r[1]) for r in rows] == want, "newest batch first, most important feature first"
    assert all(r[3] == pytest.approx(4e-6) and r[4] == pytest.approx(0.4) for r in rows)


@pytest.mark.postgres
def test_alert_panels_count_alerts_by_batch_and_list_the_open_ones(store):
    names, rows = panel_rows(store, "panel Alerts by batch time")
    assert names == ["time", "metric", "value"]
    assert rows == [(WEEKS[1], "drift", 1), (WEEKS[2], "drift", 1), (WEEKS[2], "drop", 1), (WEEKS[3], "drift", 1)]
    _, rows = panel_rows(store, "panel Alerts by batch time", datetime(2026, 1, 20, tzinfo=UTC), END)
    assert [r[0] for r in rows] == [WEEKS[2], WEEKS[2], WEEKS[3]]

    fired = [a for batch in store["batches"] for a in store["fired"][batch]]
    assert {a["rule"] for a in fired} == {"drift", "drop"} and store["failure"]["dataset_id"] is None
    open_ids = sorted({a["id"] for a in fired} - {store["acked"]["id"]} | {store["failure"]["id"]}, reverse=True)
    names, rows = panel_rows(store, "panel Open alerts")
    assert names == ["open alerts"] and rows == [(len(open_ids),)]
    names, rows = panel_rows(store, "panel Open alerts, newest first")
    assert names[:6] == ["id", "raised", "batch time", "severity", "rule", "message"]
    assert [r[0] for r in rows] == open_ids, "acknowledged alerts leave the list; the newest comes first"
    by_id = {r[0]: r for r in rows}
    assert by_id[store["failure"]["id"]][2] is None, "a run that failed before its batch has no batch time"
    assert by_id[store["failure"]["id"]][3:5] == ("critical", "failure")
    assert utc(by_id[store["fired"][store["batches"][2]][0]["id"]][2]) == WEEKS[2]
    _, rows = panel_rows(store, "panel Open alerts, newest first", datetime(2030, 1, 1, tzinfo=UTC),
                         datetime(2030, 2, 1, tzinfo=UTC))
    assert len(rows) == len(open_ids), "open alerts are listed whatever the time range"
    _, rows = panel_rows(store, "panel Open alerts", model=[OTHER])
    assert rows == [(1,)]


@pytest.mark.postgres
def test_annotations_mark_each_alert_at_its_batch(store):
    q = query("annotation keel alerts")
    names, rows = run(store["ws"].engine, grafana_sql(q.sql, {"model": [MODEL]}, START, END))
    assert names == ["time", "text", "tags"]
    assert [utc(r[0]) for r in rows] == [WEEKS[1], WEEKS[2], WEEKS[2], WEEKS[3]]
    assert all(r[1].startswith(f"{MODEL}: ") for r in rows)
    assert {r[2] for r in rows} == {"drift,warning", "drop,critical"}


# --- the store the pipeline fills ------------------------------------------------------------------------


@pytest.fixture
def pipeline_database(keel_home: Path, monkeypatch: pytest.MonkeyPatch,
                      request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database as KEEL_DATABASE_URL, under the session's Prefect server (started only when there is one)."""
    with fresh_database() as url:
        request.getfixturevalue("prefect_server")
        monkeypatch.setenv("KEEL_DATABASE_URL", url)
        yield url


@pytest.mark.slow
@pytest.mark.postgres
def test_dashboard_reads_what_the_pipeline_stores_on_postgres(pipeline_database, demo_slices, demo_config):
    from collections import Counter

    from sqlmodel import Session, select

    from keel.core.store.engine import get_engine
    from keel.core.store.models import Alert, DatasetVersion, DriftReport, FeatureDrift, MetricPoint
    from keel.flows.run_pipeline import run_pipeline

    summaries = [run_pipeline(batch=str(b), config=str(demo_config)) for b in demo_slices[:3]]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    model, start, end = summaries[0]["model"], datetime(2013, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC)
    engine = get_engine(pipeline_database)
    assert check_every_query(engine, start, end, model, nonempty=False) > 10
    with Session(engine) as s:
        points = s.exec(select(MetricPoint).where(MetricPoint.model_name == model)).all()
        data_to = dict(s.exec(select(DatasetVersion.id, DatasetVersion.data_to)).all())
        reports = s.exec(select(DriftReport)).all()
        features = s.exec(select(FeatureDrift)).all()
        alerts = s.exec(select(Alert).where(Alert.model_name == model)).all()
    scored = [x["dataset_version"] for x in summaries[1:]]  # the first batch trained the first model

    def rows(where: str, **variables: list[str]) -> list[tuple[Any, ...]]:
        q = query(where)
        _, out = run(engine, grafana_sql(q.sql, {"model": [model], **variables}, start, end))
        return [(utc(r[0]), *r[1:]) for r in out] if q.format == "time_series" else out

    realised = {(p.dataset_id, p.name): p for p in points if p.scope == "batch"}
    for metric in ("roc_auc", "accuracy", "f1", "log_loss"):
        got = rows("panel $metric against its thresholds", metric=[metric])
        want = sorted((utc(data_to[d]), p.value, p.lower, p.upper, p.value if p.alert else None)
                      for (d, name), p in realised.items() if name == metric)
        assert [r[0] for r in got] == [utc(data_to[d]) for d in scored], "one point per scored batch, at its time"
        assert got == [pytest.approx(w) for w in want]
        assert all(r[2] is not None or r[3] is not None for r in got), f"{metric} has its threshold alongside"
    for metric in ("accuracy", "roc_auc", "positive_rate"):
        got = rows("panel $estimated: estimate without labels against realised", estimated=[metric])
        estimates = sorted(((utc(data_to[p.dataset_id]), p) for p in points
                            if p.scope == "estimate" and p.name == metric), key=lambda tp: (tp[0], tp[1].id))
        assert [r[0] for r in got] == [t for t, _ in estimates] == [utc(data_to[d]) for d in scored]
        for r, (_, e) in zip(got, estimates, strict=True):
            if metric == "positive_rate":
                real = realised[(e.dataset_id, "positives")].value / realised[(e.dataset_id, "n")].value
            else:
                real = realised[(e.dataset_id, metric)].value
            assert r[1:] == pytest.approx((e.value, real, e.lower, e.upper))
    per_report = {r.id: [f.drifted for f in features if f.report_id == r.id] for r in reports}
    want = sorted((utc(data_to[r.dataset_id]), sum(per_report[r.id]) / len(per_report[r.id])) for r in reports)
    assert len(want) == 2 and rows("panel Drifted share of features") == [pytest.approx(w) for w in want]
    drifted = sum(f.drifted for f in features)
    assert len(rows("panel Drifted features")) == drifted
    counts = Counter((utc(data_to[a.dataset_id]), a.rule) for a in alerts if a.dataset_id in data_to)
    assert drifted and counts, "the demo's months drift and alert: the panels below are not compared empty"
    assert rows("panel Alerts by batch time") == sorted((t, rule, n) for (t, rule), n in counts.items())
    assert rows("panel Open alerts") == [(sum(a.acked_at is None for a in alerts),)]


# --- Prometheus -----------------------------------------------------------------------------------------


def _yaml(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS / name).read_text())


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml("keel-rules.yml")["groups"] for rule in group["rules"]]


def test_prometheus_scrapes_keel_metrics_serve_where_it_listens_by_default():
    from keel.cli.monitor import serve_cmd

    defaults = {p.name: p.default for p in serve_cmd.params}
    cfg = _yaml("prometheus.yml")
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    keel = jobs["keel"]
    assert [t for sc in keel["static_configs"] for t in sc["targets"]] == ["127.0.0.1:9108"]
    assert f"{defaults['host']}:{defaults['port']}" == "127.0.0.1:9108"
    assert keel.get("metrics_path", "/metrics") == "/metrics"
    interval = _seconds(keel.get("scrape_interval", cfg["global"]["scrape_interval"]))
    assert 15 <= interval <= 120, "values change once per batch; faster only reads the store more often"
    assert _seconds(cfg["global"].get("scrape_timeout", "10s")) < interval
    assert cfg["rule_files"] == ["keel-rules.yml"] and (PROMETHEUS / "keel-rules.yml").is_file()


def test_alert_rules_are_well_formed_and_each_has_a_rule_test():
    rules = _rules()
    assert {r["alert"] for r in rules} >= {"KeelMetricBelowThreshold", "KeelOpenAlerts", "KeelExporterDown"}
    for rule in rules:
        assert re.fullmatch(r"Keel[A-Za-z]+", rule["alert"]) and rule["expr"].strip()
        assert rule["labels"]["severity"] in ("critical", "warning", "{{ $labels.severity }}"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            _seconds(rule["for"])
    tests = _yaml("keel-rules.test.yml")
    assert tests["rule_files"] == ["keel-rules.yml"]
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert tested == {r["alert"] for r in rules}, "every rule has a unit test that makes it fire"


def _promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; or set PROMTOOL)")
    return found


def test_promtool_accepts_the_config_and_the_rules_and_passes_the_rule_tests():
    promtool = _promtool()
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "keel-rules.yml"],
                 ["test", "rules", "keel-rules.test.yml"]):
        out = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int, proc: subprocess.Popen[str]) -> str:
    for _ in range(300):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
    raise AssertionError("keel metrics serve did not answer")


def _samples(body: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            assert m, line
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def test_keel_metrics_serve_answers_with_what_the_alert_rules_read(keel_home, tmp_path):
    from keel.core.config import Settings

    build_store(tmp_path, Settings(home=keel_home))  # SQLite under KEEL_HOME: what `keel metrics serve` opens
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "keel", "metrics", "serve", "--port", str(port)],
                            env={**os.environ, "KEEL_HOME": str(keel_home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        body = _scrape(port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    served = _samples(body)
    for rule in _rules():
        for name in re.findall(r"\b(keel_\w+)", rule["expr"]):
            assert name in served, f"{rule['alert']} reads {name}, which keel does not serve"

    def sample(name: str, **labels: str) -> float:
        found = [v for lab, v in served[name] if labels.items() <= lab.items()]
        assert len(found) == 1, (name, labels, served[name])
        return found[0]

    # the newest points: the third batch's realised roc_auc breached its threshold, the fourth's estimate too
    assert sample("keel_metric_alert", model=MODEL, scope="batch", metric="roc_auc") == 1.0
    assert sample("keel_metric", model=MODEL, scope="batch", metric="roc_auc") == pytest.approx(REALISED[2]["roc_auc"])
    assert sample("keel_metric_lower", model=MODEL, scope="batch", metric="roc_auc") == pytest.approx(
        TRAIN["roc_auc"] - MAX_DROP)
    assert sample("keel_metric_alert", model=MODEL, scope="estimate", metric="roc_auc") == 1.0
    assert sample("keel_metric_alert", model=OTHER, scope="batch", metric="roc_auc") == 0.0
    assert sample("keel_alerts_open", model=MODEL, rule="drift", severity="warning") == 2.0  # one of three acked
    assert sample("keel_alerts_open", model=MODEL, rule="failure", severity="critical") == 1.0
    if os.environ.get("PROMTOOL") or shutil.which("promtool"):
        lint = subprocess.run([_promtool(), "check", "metrics"], input=body, capture_output=True, text=True,
                              timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

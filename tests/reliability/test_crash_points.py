"""A run killed at any of keel's crash points, then run again, ends where a run never killed ends.

Every stage boundary (before the stage's work, and after it but before its row is written) and every
place between two writes of a run (keel.core.faults.crash_point) is tried, on the SQLite store and on
PostgreSQL: the second labelled batch (a production model exists; the candidate is trained, evaluated
and gated) is run with KEEL_CRASH_AT naming the point, the process kills itself there with SIGKILL (exit
status -9 proves the point was reached: without it the run ends 0), and the same command is run again.
The store must then equal a never-killed run's: dataset and model versions, the one production alias,
predictions, metric points, drift reports, quarantine, reviews, alerts and their checks, the audit chain
intact and in the same order; every artifact whole under its name (its content hashes to its name), and no
row pointing at nothing.

The runs are forked from one process that imported keel once (tests/forked_keel.py): a whole keel process
each, with its own home, killed for real, without paying the imports 150 times.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.forked_keel import ForkedKeel
from tests.reliability.test_kill_restart import CONFIG

STAGES = ("ingest", "validate", "score", "drift", "monitor", "decide", "datasets", "train", "evaluate", "register",
          "gate")
BETWEEN_WRITES = (
    "ingest:stored",  # the batch's copy is stored, its dataset version not yet registered
    "artifact:written",  # an artifact written whole beside its final name, not yet renamed into place
    "plan:made",  # the run's plan (production it is judged against) written on its row
    "quarantine:written",
    "predictions:written",
    "drift:written",
    "estimate:written",  # the label-free estimate recorded, production's batch metrics not yet
    "metrics:written",
    "datasets:train-registered",  # the training set registered, the holdout not yet
    "datasets:holdout-registered",
    "candidate:stored",  # the model's artifact stored, its version not yet registered
    "candidate:registered",  # the version registered, its holdout metrics not yet
    "candidate:measured",
    "decision:applied",  # promoted, rejected or sent to review: the run not yet closed
    "alerts:stored",  # the alerts that fire are stored, not yet delivered
    "alerts:sent",  # the run's alerts evaluated and delivered, the run not yet closed
    "run:closed",  # the run's row closed, older unfinished runs of the batch not yet marked abandoned
)
POINTS = [f"{stage}:{when}" for stage in STAGES for when in ("start", "done")] + list(BETWEEN_WRITES)

# what must be equal, as sorted rows (duplicates show); ids and times are left out, order kept where it means
_QUERIES = {
    "datasets": "select id, kind, rows, labelled_rows, format from dataset_version",
    "lineage": "select parent_id, child_id from dataset_lineage",
    "models": "select model_name, version, artifact_sha256, status, train_dataset_id, holdout_dataset_id "
              "from model_version",
    "alias": "select a.model_name, a.alias, m.version from alias a join model_version m on m.id = a.model_version_id",
    "predictions": "select count(*), round(cast(sum(p.score) as numeric), 6), count(distinct s.model_version_id) "
                   "from prediction p join prediction_set s on s.id = p.set_id",
    "metrics": "select m.version, p.dataset_id, p.scope, p.name, round(cast(p.value as numeric), 9), p.alert "
               "from metric_point p join model_version m on m.id = p.model_version_id",
    "drift": "select dataset_id, reference_id, settings_hash, detected, n_drifted from drift_report",
    "feature_drift": "select r.dataset_id, f.feature, f.drifted from feature_drift f join drift_report r "
                     "on r.id = f.report_id",
    "quarantine": "select dataset_id, row_index, reason from quarantine",
    "reviews": "select m.version, r.status from review r join model_version m on m.id = r.candidate_version_id",
    "alerts": "select rule, model_name, dataset_id, delivered, delivery_error from alert",
    "alert_checks": "select c.rule, c.dataset_id, c.breached, c.fired from alert_check c",
    # a killed run is left 'abandoned'; a run killed after it closed is complete, so running it again is a replay
    # (recorded as such, and writing nothing else)
    "runs": "select batch_id, status, decision from pipeline_run where status <> 'abandoned' and replay_of is null",
}
_ORDERED = {"audit": "select action, model_name, version from audit_event order by id"}
# rows that must point at something (no orphans): child table, column -> parent table, column
_REFERENCES = [
    ("prediction", "set_id", "prediction_set", "id"),
    ("prediction_set", "dataset_id", "dataset_version", "id"),
    ("prediction_set", "run_id", "pipeline_run", "id"),
    ("metric_point", "dataset_id", "dataset_version", "id"),
    ("metric_point", "run_id", "pipeline_run", "id"),
    ("model_version", "train_dataset_id", "dataset_version", "id"),
    ("model_version", "holdout_dataset_id", "dataset_version", "id"),
    ("model_version", "run_id", "pipeline_run", "id"),
    ("drift_report", "dataset_id", "dataset_version", "id"),
    ("dataset_lineage", "parent_id", "dataset_version", "id"),
    ("dataset_lineage", "child_id", "dataset_version", "id"),
    ("stage_run", "run_id", "pipeline_run", "id"),
    ("alert_check", "run_id", "pipeline_run", "id"),
    ("quarantine", "dataset_id", "dataset_version", "id"),
]


def store_state(url: str) -> dict:
    from keel.core.registry.audit import verify

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            state = {name: sorted(tuple(r) for r in conn.execute(text(sql))) for name, sql in _QUERIES.items()}
            state.update({name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in _ORDERED.items()})
            orphans = {}
            for child, column, parent, key in _REFERENCES:
                n = conn.execute(text(f"select count(*) from {child} c where c.{column} is not null and not exists "
                                      f"(select 1 from {parent} p where p.{key} = c.{column})")).scalar()
                if n:
                    orphans[f"{child}.{column}"] = n
        state["orphans"] = orphans
        check = verify(engine)
        state["audit chain"] = (check.ok, check.problem)
    finally:
        engine.dispose()
    return state


def artifacts_whole(home: Path) -> list[str]:
    """Artifacts under their final names whose content does not hash to the name (none may be)."""
    bad = []
    for path in (home / "artifacts").rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            if hashlib.sha256(path.read_bytes()).hexdigest() != path.name.split(".")[0]:
                bad.append(str(path))
    return bad


class Backend:
    """Where a project's store is: its SQLite file under KEEL_HOME, or a PostgreSQL database."""

    def __init__(self, name: str, admin_url: str | None = None) -> None:
        self.name, self.admin_url = name, admin_url

    def url(self, project: Path) -> str:
        if self.name == "sqlite":
            return f"sqlite:///{project / '.keel' / 'keel.db'}"
        from sqlalchemy.engine import make_url

        return make_url(self.admin_url).set(database=_db_name(project)).render_as_string(hide_password=False)

    def copy(self, template: Path, project: Path) -> None:
        shutil.copytree(template, project)
        if self.name == "postgresql":
            self._admin(f"CREATE DATABASE {_db_name(project)} TEMPLATE {_db_name(template)}")

    def create(self, project: Path) -> None:
        if self.name == "postgresql":
            self._admin(f"CREATE DATABASE {_db_name(project)}")

    def drop(self, projects: list[Path]) -> None:
        if self.name == "postgresql":
            for project in projects:
                self._admin(f"DROP DATABASE IF EXISTS {_db_name(project)} WITH (FORCE)")

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(sql))
        engine.dispose()


def _db_name(project: Path) -> str:
    return "keel_crash_" + hashlib.sha256(str(project).encode()).hexdigest()[:16]


class World:
    """Projects made from one template (the first batch run), each run by forked keel processes."""

    def __init__(self, keel: ForkedKeel, backend: Backend, root: Path, batches: list[Path]) -> None:
        self.keel, self.backend, self.root, self.batches = keel, backend, root, batches
        self.made: list[Path] = []
        self.template = self._project("template")
        self.backend.create(self.template)
        self.run(self.template, self.batches[0], expect=0)

    def _project(self, name: str) -> Path:
        project = self.root / name
        project.mkdir()
        (project / "keel.toml").write_text(CONFIG)
        self.made.append(project)
        return project

    def fresh_copy(self, name: str) -> Path:
        project = self.root / name
        self.backend.copy(self.template, project)
        self.made.append(project)
        return project

    def run(self, project: Path, batch: Path, expect: int, crash_at: str | None = None) -> None:
        env = {"KEEL_HOME": str(project / ".keel"), "KEEL_DATABASE_URL": self.backend.url(project)}
        if crash_at:
            env["KEEL_CRASH_AT"] = crash_at
        log = project / f"run-{crash_at or 'whole'}"
        code = self.keel.run(["run", str(batch)], cwd=project, env=env, log=log)
        err = Path(f"{log}.err").read_text()
        if crash_at and expect == -9:
            assert code == -9, f"the run ended {code} without reaching {crash_at}: {err[-2000:]}"
        else:
            assert code == expect, f"keel run {batch.name} ended {code}: {err[-2000:]}"

    def state(self, project: Path) -> dict:
        return {**store_state(self.backend.url(project)), "broken artifacts": artifacts_whole(project / ".keel")}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, demo_slices, tmp_path_factory, prefect_server):
    import os

    from prefect.settings import PREFECT_API_URL

    admin = os.environ.get("KEEL_TEST_POSTGRES_URL")
    if request.param == "postgresql" and not admin:
        pytest.skip("KEEL_TEST_POSTGRES_URL is not set: no PostgreSQL to crash against")
    backend = Backend(request.param, admin)
    with ForkedKeel({"PREFECT_API_URL": PREFECT_API_URL.value()}) as keel:
        world = World(keel, backend, tmp_path_factory.mktemp(f"crash-{request.param}"), demo_slices[:2])
        try:
            never = world.fresh_copy("never-killed")
            world.run(never, world.batches[1], expect=0)
            world.expected = world.state(never)
            yield world
        finally:
            backend.drop(world.made)


@pytest.mark.slow  # forked keel runs against the session's Prefect server
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_a_crash_point_restarts_to_the_state_of_a_run_never_killed(world, point):
    project = world.fresh_copy(point.replace(":", "-"))
    world.run(project, world.batches[1], expect=-9, crash_at=point)
    world.run(project, world.batches[1], expect=0)
    state = world.state(project)
    differs = {key: {"after the kill": state[key], "never killed": want} for key, want in world.expected.items()
               if state[key] != want}
    assert not differs, "\n".join(f"{key}:\n  after the kill: {v['after the kill']}\n  never killed:   {v['never killed']}" for key, v in differs.items())


def test_there_are_at_least_twenty_crash_points_and_each_is_in_keels_code():
    import keel.core
    import keel.flows

    folders = [Path(keel.core.__file__).parent, Path(keel.flows.__file__).parent]
    source = "\n".join(p.read_text() for folder in folders for p in folder.rglob("*.py"))
    assert len(set(POINTS)) >= 20
    for point in BETWEEN_WRITES:
        written = point.replace("train-", "{kind}-").replace("holdout-", "{kind}-")
        assert f'crash_point("{point}")' in source or f'crash_point(f"{written}")' in source, point
    assert 'crash_point(f"{name}:start")' in source and 'crash_point(f"{name}:done")' in source

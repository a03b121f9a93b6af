"""A small real registry for the issue-4 tests: a batch, its training set and holdout, and trained versions.

Built with keel's own core functions on the real store (SQLite, or PostgreSQL via KEEL_DATABASE_URL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def write_config(root: Path, approvers: list[str] | None = None, required: int = 1, extra: str = "") -> Path:
    review = f"[review]\napprovers = {approvers or []!r}\nrequired_approvals = {required}\n".replace("'", '"')
    path = root / "keel.toml"
    path.write_text(f'model = "churn"\ntarget = "y"\nid = "rid"\n{review}{extra}')
    return path


def make_batch(root: Path, n: int = 600, seed: int = 0, name: str = "batch.parquet") -> Path:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "blue", "green"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 - x2 + (colour == "red"))))).astype(int)
    path = root / name
    pl.DataFrame({"rid": [f"r{seed}-{i}" for i in range(n)], "x1": x1, "x2": x2, "colour": colour, "y": y}).write_parquet(path)
    return path


def build(root: Path, versions: int = 4, approvers: list[str] | None = None, required: int = 1,
          extra: str = "") -> Path:
    """Write keel.toml, ingest one batch and register ``versions`` trained model versions; returns the config."""
    from keel.core.data.features import Columns
    from keel.core.model.evaluate import classification_metrics
    from keel.core.model.train import model_params
    from keel.core.pipeline import run as book
    from keel.core.pipeline import stages as pipeline
    from keel.core.store import records
    from keel.core.workspace import Workspace

    config = write_config(root, approvers, required, extra)
    ws = Workspace.open(config)
    batch = pipeline.ingest(ws, str(make_batch(root)))
    sets = pipeline.make_training_sets(ws, [batch["id"]])
    for seed in range(1, versions + 1):
        run_id = records.start_run(ws, str(root / "batch.parquet"), None)
        records.update_run(ws, run_id, batch_id=batch["id"])
        params = model_params({"min_data_in_leaf": 10}, seed)
        columns = Columns.of(ws.cfg)
        model = pipeline.train(ws, sets["train"], columns, params, 5)
        evaluation = pipeline.evaluate(ws, sets["holdout"], model, None, 0.5, 0.05, 50)
        mv = book.register_candidate(ws, run_id, sets, model, params, 5, columns.to_dict(), evaluation, None)
        records.record_metrics(ws, mv.id or 0, sets["holdout"], "holdout",
                               classification_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4])), run_id)
        records.finish_run(ws, run_id, "completed", decision="review", model_version_id=mv.id)
    return config


def workspace(config: Path):  # noqa: ANN201
    from keel.core.workspace import Workspace

    return Workspace.open(config)


def review_with_a_waiting_run(ws, version: int) -> str:  # noqa: ANN001
    """Open the review of ``version`` for the run that trained it and leave that run waiting on it, as a run
    paused by ``[review] wait = true`` does, under a flow run id no Prefect server knows; returns that id."""
    import uuid

    from keel.core.registry import transactions as registry
    from keel.core.store.models import PipelineRun

    with ws.session() as session:
        run_id = registry.get_version(session, "churn", version).run_id
    registry.open_review(ws, "churn", version, ["ambiguous AUC change"], None, run_id, actor="keel (pipeline)")
    flow_run_id = str(uuid.uuid4())
    with ws.session() as session:
        run = session.get(PipelineRun, run_id)
        run.status, run.flow_run_id = "waiting", flow_run_id
        session.add(run)
    return flow_run_id


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def race_worker(role: str, actor: str, config: str, barrier, results) -> None:  # noqa: ANN001
    """One operator in a race: approve v3, roll back, or promote v4 from a stale screen; reports outcomes."""
    import time

    from keel.core.errors import Conflict, NotFound
    from keel.core.registry import transactions as registry

    ws = workspace(Path(config))
    ws.engine  # noqa: B018  (open the store before the start line)
    barrier.wait()
    outcomes = []
    for i in range(4 if role != "approve" else 1):
        try:
            if role == "approve":
                registry.approve(ws, "churn", 3, f"{actor} approves", actor=actor)
            elif role == "rollback":
                registry.rollback(ws, "churn", f"{actor} rollback {i}", actor=actor)
            else:
                seen = registry.alias_revision(ws, "churn")
                time.sleep(0.01)  # the operator looks at the screen, then acts on what they saw
                registry.promote(ws, "churn", 4, f"{actor} promote {i}", actor=actor, expected_revision=seen)
            outcomes.append("ok")
        except Conflict as exc:
            outcomes.append(f"conflict: {exc}")
        except NotFound:
            outcomes.append("notfound")
        except Exception as exc:  # anything else fails the test
            outcomes.append(f"error: {type(exc).__name__}: {exc}")
    results.put((role, actor, outcomes))

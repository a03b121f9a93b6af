"""Bad inputs: `keel run` on every file of the corpus (scripts/make_corpus.py) against a production model.

Each case ends as its row in CASES says: exit 2 (refused before anything is written), exit 3 (quarantined
whole: the batch is kept for replay, nothing scored) or exit 0 (accepted; bad rows quarantined with a
reason each, the rest scored). A refusal is exactly one stderr line naming the problem, no traceback. The
store is as it was apart from the quarantine (for exit 0 also the batch's predictions), no row is lost
(scored + quarantined = the file's rows), and every stored dataset's hash is the SHA-256 of its stored bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, col, select
from store_snapshot import snapshot

from keel.core.config import load_config
from keel.core.data import batches
from keel.core.data.batches import read_batch, snapshot_file
from keel.core.data.contract import learn_contract, validate
from keel.core.data.features import feature_spec
from keel.core.errors import DataError, KeelError
from keel.core.store.models import DatasetVersion, Prediction, PredictionSet, Quarantine

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
SERVER_NOTE = "keel: using this home's Prefect server at "  # said once per command when `keel server start` runs


def corpus_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Case:
    file: str
    exit: int  # 0 accepted, 2 refused before anything is written, 3 quarantined whole
    says: str  # the one stderr line names the problem with these words (exit 0: what stdout says, if anything)
    rule: str  # what a user expects, and so what keel does


CASES = [
    Case("good.csv", 0, "quarantined rows 0", "a valid second batch, the control: every row scored"),
    Case("utf8-bom.csv", 0, "quarantined rows 0", "a UTF-8 byte-order mark (Excel's 'CSV UTF-8') is UTF-8: read as such"),
    Case("renamed-columns.csv", 3, "required column 'tenure' is missing",
         "features renamed upstream: quarantined whole, never scored without a feature; replay once fixed"),
    Case("no-label.csv", 2, "target column 'churned' is missing",
         "the label column is gone: refused (an unlabelled batch keeps the column, empty)"),
    Case("third-label.csv", 3, "label churned not in ['0', '1']",
         "a third label value in 15% of rows: over max_bad_share (5%), quarantined whole"),
    Case("third-label-few.csv", 0, "quarantined rows 8",
         "a third label value in 2% of rows: those rows quarantined with the reason, the rest scored"),
    Case("all-null-feature.csv", 3, "column 'tenure' is 100% null, 0% in the reference",
         "a feature never null in the reference arrives empty: over max_null_increase, quarantined whole"),
    Case("constant-feature.csv", 0, "drift: visits",
         "a constant feature is valid data: every row scored, and drift names the feature"),
    Case("infinities.csv", 3, "tenure is not finite", "±inf in 10% of a feature's rows: quarantined whole"),
    Case("infinities-few.csv", 0, "quarantined rows 4",
         "inf in 1% of rows: those rows quarantined with the reason, the rest scored"),
    Case("numbers-as-strings.parquet", 3, "column 'tenure' holds numbers as text",
         "a numeric feature written as text: quarantined whole; keel guesses no types (cast upstream, replay)"),
    Case("mixed-types.csv", 3, "column 'tenure' mixes numbers and text (12 of 400 values are not numbers, first 'abc'",
         "text among a numeric feature's values: quarantined whole, naming the first bad value and its row"),
    Case("duplicate-ids.csv", 3, "customer_id is duplicated", "ids repeated in 17% of rows: quarantined whole"),
    Case("duplicate-ids-few.csv", 0, "quarantined rows 4",
         "two ids repeated: the four rows sharing them quarantined, the rest scored"),
    Case("odd-ids.csv", 0, "quarantined rows 0",
         "ids holding SQL, quotes, commas, newlines, Unicode are data: stored verbatim, the store intact"),
    Case("blank.csv", 2, "the file is empty (blank lines only)", "only blank lines: refused as empty"),
    Case("header-only.csv", 2, "the file has no rows", "a header and no rows: refused"),
    Case("empty.parquet", 2, "the file has no rows", "a Parquet file with a schema and no rows: refused"),
    Case("latin1.csv", 2, "not UTF-8 text (byte 0xFC at offset 63, line 2",
         "Latin-1 bytes: refused naming the first bad byte and its line, never decoded by guesswork"),
    Case("utf16.csv", 2, "UTF-16 text; keel reads UTF-8 CSV", "UTF-16 text: refused naming the encoding"),
    Case("zero-byte.csv", 2, "the file is empty", "0 bytes: refused"),
    Case("zero-byte.parquet", 2, "the file is empty", "0 bytes named .parquet: refused"),
    Case("truncated.parquet", 2, "cannot read parquet: truncated", "a Parquet file cut in half: refused as truncated"),
    # made at test time (scripts/make_corpus.py write_runtime_cases)
    Case("a-folder.csv", 2, "is a directory", "a directory named like a batch: refused"),
    Case("loop-a.csv", 2, "a loop of symbolic links", "a symbolic-link loop: refused as one, not 'no such file'"),
    Case("gone.csv", 2, "a symbolic link to nowhere.csv, which does not exist", "a dangling link: refused naming it"),
    Case("pipe.csv", 2, "not a regular file", "a FIFO: refused at once (reading one would block)"),
    Case("huge-line.csv", 2, "row 201 of column 'city' holds 50.0 MB of text",
         "a 50 MB line (a runaway quote, lost line ends): refused, nothing stored"),
]


# --- the corpus ---------------------------------------------------------------------------------------------


def test_the_committed_corpus_is_what_the_script_writes(tmp_path):
    corpus_script().write_corpus(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CORPUS.iterdir())
    for fresh in tmp_path.iterdir():
        kept = CORPUS / fresh.name
        if fresh.suffix == ".parquet" and fresh.stat().st_size and fresh.name != "truncated.parquet":
            assert pl.read_parquet(fresh).equals(pl.read_parquet(kept)), fresh.name  # bytes follow polars' version
        elif fresh.suffix != ".parquet":
            assert fresh.read_bytes() == kept.read_bytes(), f"{fresh.name}: run python scripts/make_corpus.py"
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 1_000_000
    assert {c.file for c in CASES} | {"base.csv", "keel.toml"} == {p.name for p in CORPUS.iterdir()} | {
        "a-folder.csv", "loop-a.csv", "gone.csv", "pipe.csv", "huge-line.csv"}, "every file has its row in CASES"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus and the inputs made at test time, in one folder."""
    folder = tmp_path_factory.mktemp("inputs")
    for path in CORPUS.iterdir():
        shutil.copyfile(path, folder / path.name)
    corpus_script().write_runtime_cases(folder)
    return folder


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_each_input_ends_in_process_as_its_row_says(case, inputs, keel_home):
    """The checks `keel run` makes, called directly: fast, and the twin of the subprocess test below."""
    from keel.core.pipeline.stages import preflight
    from keel.core.workspace import Workspace

    cfg = load_config(inputs / "keel.toml")
    if case.exit == 2:
        with pytest.raises(KeelError) as info:
            preflight(Workspace.open(inputs / "keel.toml"), str(inputs / case.file))
        assert info.value.exit_code == 2 and "\n" not in str(info.value)
        assert case.says in str(info.value)
        assert not keel_home.exists(), "a refused batch writes nothing, not even an empty store"
        return
    base = read_batch(inputs / "base.csv")
    contract = learn_contract(base, feature_spec(cfg, base), cfg.contract.ranges)
    result = validate(read_batch(inputs / case.file), contract, cfg.contract)
    if case.exit == 3:
        assert result.batch_reason is not None and case.says in result.batch_reason
    else:
        assert result.batch_reason is None
        if case.says.startswith("quarantined rows"):
            assert len(result.bad_indices) == int(case.says.rsplit(" ", 1)[1])


# --- a file that changes while keel reads it ----------------------------------------------------------------


def test_a_file_that_grows_while_copied_is_refused(tmp_path, monkeypatch):
    src = tmp_path / "growing.csv"
    src.write_text("a,b\n1,2\n")
    real_fstat = os.fstat

    def fstat_then_append(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        with open(src, "a") as fh:  # a writer appends right after keel opened the file
            fh.write("3,4\n")
        return st

    monkeypatch.setattr(batches.os, "fstat", fstat_then_append)
    with pytest.raises(DataError, match="changed while keel read it"):
        snapshot_file(src, tmp_path / "incoming", name="growing.csv")
    assert list((tmp_path / "incoming").iterdir()) == [], "no torn copy is left behind"


def test_a_file_replaced_while_copied_is_refused(tmp_path, monkeypatch):
    src, other = tmp_path / "batch.csv", tmp_path / "other.csv"
    src.write_text("a,b\n1,2\n")
    other.write_text("a,b\n5,6\n")  # the same size: only the replacement tells
    real_fstat = os.fstat

    def fstat_then_replace(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        os.replace(other, src)
        return st

    monkeypatch.setattr(batches.os, "fstat", fstat_then_replace)
    with pytest.raises(DataError, match="changed while keel read it"):
        snapshot_file(src, tmp_path / "incoming")


def test_ingest_stores_the_bytes_it_hashed_though_the_file_changes_after_the_copy(inputs, keel_home, monkeypatch):
    from keel.core.pipeline import stages
    from keel.core.workspace import Workspace

    src = keel_home.parent / "batch.csv"
    shutil.copyfile(inputs / "good.csv", src)
    original = src.read_bytes()
    real_read = stages.read_batch

    def rewrite_then_read(path: Path, name: object = None) -> pl.DataFrame:
        src.write_bytes(original + original.split(b"\n", 1)[1])  # rows appended once keel holds its copy
        return real_read(path, name)

    monkeypatch.setattr(stages, "read_batch", rewrite_then_read)
    ws = Workspace.open(inputs / "keel.toml")
    row = stages.ingest(ws, str(src))
    stored = Path(row["artifact_uri"]).read_bytes()
    assert row["id"] == hashlib.sha256(stored).hexdigest() == hashlib.sha256(original).hexdigest()
    assert row["rows"] == pl.read_csv(stored).height == 400 and src.stat().st_size > len(original)
    assert not any((keel_home / "incoming").iterdir()), "the snapshot is removed"


# --- keel run in subprocesses -----------------------------------------------------------------------------------


@dataclass
class World:
    inputs: Path
    template: Path  # a KEEL_HOME where base.csv made the production model
    homes: Path
    env: dict[str, str]
    before: dict[str, Any]


def keel(world: World, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**world.env, "KEEL_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=world.inputs, env=env, capture_output=True,
                          text=True, timeout=600)


def store(home: Path) -> Any:
    return create_engine(f"sqlite:///{home / 'keel.db'}")


@pytest.fixture(scope="module")
def world(inputs: Path, tmp_path_factory: pytest.TempPathFactory):
    """One long-lived Prefect server (`keel server start`) for every case, and a home with a production model."""
    top = tmp_path_factory.mktemp("bad-inputs")
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DEBUG"}
    env.update(PREFECT_HOME=str(top / "prefect"), KEEL_HOME=str(top / "template"))
    world = World(inputs, top / "template", top / "homes", env, {})
    started = keel(world, world.template, "server", "start")
    assert started.returncode == 0, started.stderr
    try:
        first = keel(world, world.template, "run", "base.csv", "--config", "keel.toml")
        assert first.returncode == 0 and "promoted" in first.stdout, first.stdout + first.stderr
        engine = store(world.template)
        world.before = snapshot(engine)
        engine.dispose()
        yield world
    finally:
        keel(world, world.template, "server", "stop")


@dataclass
class Outcome:
    name: str
    exit: int
    stdout: str
    errors: list[str]  # stderr lines, without the server note
    home: Path


def run_case(world: World, name: str, file: str, during: Any = None) -> Outcome:
    """`keel run FILE` in a fresh copy of the template home; ``during`` runs (a context manager) around it."""
    home = world.homes / name
    shutil.copytree(world.template, home)
    if during is None:
        result = keel(world, home, "run", file, "--config", "keel.toml")
    else:
        with during:
            result = keel(world, home, "run", file, "--config", "keel.toml")
    errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(SERVER_NOTE)]
    return Outcome(name, result.returncode, result.stdout, errors, home)


def check_store(world: World, outcome: Outcome, rows_in_file: int | None) -> dict[str, int]:
    """The store against the template's: unchanged but for the batch, its quarantine and (exit 0) its predictions;
    every stored dataset hashed right; no row lost. Returns the batch's figures."""
    engine = store(outcome.home)
    after = snapshot(engine)
    try:
        for key in ("models", "aliases", "audit"):
            assert after[key] == world.before[key], f"{outcome.name}: {key} changed"
        new = sorted(set(after["datasets"]) - set(world.before["datasets"]))
        if outcome.exit == 2:
            assert after == world.before, f"{outcome.name}: a refused batch changed the store"
            return {"rows": 0, "scored": 0, "quarantined": 0}
        assert [kind for _, kind in new] == ["batch"], f"{outcome.name}: {new}"
        dataset_id = new[0][0]
        with Session(engine) as s:
            dv = s.get(DatasetVersion, dataset_id)
            assert dv is not None
            scored = len(s.exec(select(Prediction.row_id).join(PredictionSet, col(PredictionSet.id) == col(Prediction.set_id))
                                 .where(PredictionSet.dataset_id == dataset_id)).all())
            quarantine = list(s.exec(select(Quarantine).where(Quarantine.dataset_id == dataset_id)))
        stored = Path(dv.artifact_uri).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == dataset_id, f"{outcome.name}: hash and stored bytes differ"
        kept = read_batch(Path(dv.artifact_uri))
        assert kept.height == dv.rows, outcome.name
        if rows_in_file is not None:
            assert dv.rows == rows_in_file, f"{outcome.name}: the stored batch lost rows"
        bad = {q.row_index for q in quarantine if q.row_index >= 0}
        assert all(q.reason for q in quarantine), f"{outcome.name}: a quarantine row without a reason"
        if outcome.exit == 3:
            assert scored == 0 and any(q.whole_batch for q in quarantine), outcome.name
        else:
            assert scored + len(bad) == dv.rows, f"{outcome.name}: {dv.rows} rows, {scored} scored, {len(bad)} quarantined"
        return {"rows": dv.rows, "scored": scored, "quarantined": dv.rows if outcome.exit == 3 else len(bad)}
    finally:
        engine.dispose()


def file_rows(path: Path) -> int | None:
    try:
        return read_batch(path).height
    except KeelError:
        return None


@pytest.mark.slow  # about 30 keel processes, 13 of them through Prefect
def test_keel_run_on_every_bad_input(world):
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda c: run_case(world, c.file.replace(".", "_"), c.file), CASES))
    report = []
    for case, outcome in zip(CASES, outcomes, strict=True):
        where = f"{case.file} ({case.rule}): exit {outcome.exit}, stderr {outcome.errors}, stdout {outcome.stdout[-400:]}"
        assert outcome.exit == case.exit, where
        assert not any("Traceback" in line for line in outcome.errors), where
        if case.exit:
            assert len(outcome.errors) == 1 and outcome.errors[0].startswith("keel: "), where
            assert case.says in outcome.errors[0], where
        else:
            assert outcome.errors == [] and case.says in outcome.stdout, where
        figures = check_store(world, outcome, file_rows(world.inputs / case.file))
        report.append(f"{case.file:28} exit {outcome.exit}  rows {figures['rows']:4}  scored {figures['scored']:4}  "
                      f"quarantined {figures['quarantined']:4}")
    odd = corpus_script().ODD_IDS
    engine = store(world.homes / "odd-ids_csv")
    with Session(engine) as s:
        ids = set(s.exec(select(Prediction.row_id).where(col(Prediction.row_id).in_(odd))).all())
    engine.dispose()
    assert ids == set(odd), "odd ids are stored verbatim"
    print("\n" + "\n".join(report))


class Writer:
    """A background writer that changes a batch file while keel reads it: appending fresh rows, or rewriting it
    whole (truncate, then write) with one valid batch and then another."""

    def __init__(self, path: Path, mode: str, versions: list[bytes], extra: list[bytes]) -> None:
        self.path, self.mode, self.versions, self.extra = path, mode, versions, extra
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.write, daemon=True)
        self.writes = 0

    def write(self) -> None:
        while not self.stop.is_set():
            if self.mode == "append":
                with open(self.path, "ab") as fh:
                    fh.write(self.extra[self.writes % len(self.extra)])
            else:
                self.path.write_bytes(self.versions[self.writes % len(self.versions)])
            self.writes += 1
            time.sleep(0.0005)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.slow  # keel run in a subprocess, through Prefect
@pytest.mark.parametrize("mode", ["append", "rewrite"])
def test_keel_run_on_a_file_changing_while_read(world, mode):
    """Either keel takes one consistent snapshot (its hash is the hash of the bytes it stored, which it scored) or
    it refuses the file in one line; which depends on timing, so both are right and both are checked."""
    script = corpus_script()
    path = world.inputs / f"changing-{mode}.csv"
    good = (world.inputs / "good.csv").read_bytes()
    path.write_bytes(good)
    more = script.dataset(script.SEED + 2, rows=20_000, first_id=50_000).write_csv().encode().split(b"\n")[1:-1]
    other = script.dataset(script.SEED + 3, first_id=90_000).write_csv().encode()
    writer = Writer(path, mode, [good, other], [line + b"\n" for line in more])
    outcome = run_case(world, f"changing-{mode}", path.name, during=writer)
    where = f"{mode} ({writer.writes} writes): exit {outcome.exit}, stderr {outcome.errors}"
    assert writer.writes > 10, where
    assert outcome.exit in (0, 2, 3), where
    assert not any("Traceback" in line for line in outcome.errors), where
    if outcome.exit:
        assert len(outcome.errors) == 1 and outcome.errors[0].startswith("keel: "), where
    figures = check_store(world, outcome, None)
    print(f"\n{mode}: {where}; {figures}")

"""Writes keel's bad-input corpus: a small seeded dataset, its keel.toml, a valid first batch (it makes the
production model whose contract the rest are judged by), a valid second batch, and one file per bad input.

    python scripts/make_corpus.py [FOLDER] [--seed N] [--runtime]

FOLDER defaults to tests/reliability/corpus, where the output is committed (about 200 KB);
tests/reliability/test_bad_inputs.py checks that the script still writes exactly those bytes and runs
`keel run` on every file. The same seed writes the same bytes. The inputs git cannot or should not hold (a
directory, a symbolic-link loop, a dangling link, a FIFO, a 50 MB line) are made by `write_runtime_cases`,
at test time or with --runtime; files that change while keel reads them are made by the test itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "reliability" / "corpus"
SEED = 20261
ROWS = 400
CITIES = ["Zürich", "Genève", "Basel", "Bern"]  # non-ASCII on purpose: every file exercises UTF-8
CONFIG = """\
# The corpus project: will a customer churn? Written by scripts/make_corpus.py.
model = "corpus-churn"
target = "churned"
positive = 1
id = "customer_id"
categorical = ["city"]

[contract]
max_bad_share = 0.05
ranges = { spend = [0, 100000] }

[retrain]
# the first batch trains the production model; nothing after it retrains, so every case meets the same contract
on_drift = false
on_drop = false
every = 0

[gate]
n_boot = 50
"""

# SQL, quotes, separators, a newline inside a quoted field, Unicode: ids are data, stored as they are
ODD_IDS = [
    "x'); DROP TABLE prediction; --", "Robert'); DELETE FROM alias WHERE ('1'='1", '"quoted"', "O'Brien",
    "a,b", "line\nbreak", "tab\there", " padded ", "日本-001", "NULL", "' OR 1=1 --", "%_wild*", "\\backslash",
]


def dataset(seed: int, rows: int = ROWS, first_id: int = 0) -> pl.DataFrame:
    """Customers with four features and a label that depends on them (a model learns it to AUC ~0.85)."""
    rng = np.random.default_rng(seed)
    tenure = rng.normal(0.0, 1.0, rows).round(4)
    visits = rng.integers(0, 100, rows)
    city = rng.choice(np.array(CITIES), rows)
    spend = rng.gamma(2.0, 50.0, rows).round(2)
    logit = -1.8 * tenure + 0.03 * (visits - 50) + np.where(city == CITIES[0], 1.0, 0.0) - 0.4
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame({
        "customer_id": [f"c{first_id + i:05d}" for i in range(rows)],
        "tenure": tenure, "visits": visits, "city": city.tolist(), "spend": spend, "churned": churned,
    })


def _rows(rng: np.random.Generator, share: float, rows: int = ROWS) -> np.ndarray:
    """A seeded, sorted choice of ``share`` of the row numbers (at least one)."""
    return np.sort(rng.choice(rows, size=max(1, round(share * rows)), replace=False))


def _set(frame: pl.DataFrame, column: str, rows: np.ndarray, values: list) -> pl.DataFrame:
    """``frame`` with ``column`` replaced at ``rows`` by ``values``; the column's dtype follows the values."""
    cells = frame[column].to_list()
    for i, v in zip(rows.tolist(), values, strict=True):
        cells[i] = v
    return frame.with_columns(pl.Series(column, cells, strict=False))


def _csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv().encode()


def _parquet(frame: pl.DataFrame, path: Path) -> None:
    frame.write_parquet(path, compression="zstd", statistics=False)


def write_corpus(folder: Path = CORPUS, seed: int = SEED) -> list[Path]:
    """Write keel.toml, the two valid batches and every committed bad input into ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base, good = dataset(seed), dataset(seed + 1, first_id=10_000)
    text = good.write_csv()
    files: dict[str, bytes | pl.DataFrame] = {
        "keel.toml": CONFIG.encode(),
        "base.csv": _csv(base),
        "good.csv": text.encode(),
        "utf8-bom.csv": b"\xef\xbb\xbf" + text.encode(),
        "renamed-columns.csv": _csv(good.rename({"tenure": "Tenure", "spend": "spend_eur"})),
        "no-label.csv": _csv(good.drop("churned")),
        "third-label.csv": _csv(_set(good, "churned", rows := _rows(rng, 0.15), [2] * len(rows))),
        "third-label-few.csv": _csv(_set(good, "churned", rows := _rows(rng, 0.02), [2] * len(rows))),
        "all-null-feature.csv": _csv(good.with_columns(pl.lit(None, pl.Float64).alias("tenure"))),
        "constant-feature.csv": _csv(good.with_columns(pl.lit(42, pl.Int64).alias("visits"))),
        "infinities.csv": _csv(_set(good, "tenure", rows := _rows(rng, 0.10),
                                    [float("inf") if i % 2 else float("-inf") for i in range(len(rows))])),
        "infinities-few.csv": _csv(_set(good, "tenure", rows := _rows(rng, 0.01), [float("inf")] * len(rows))),
        "numbers-as-strings.parquet": good.with_columns(pl.col("tenure").cast(pl.String)),
        "mixed-types.csv": _csv(_set(good.with_columns(pl.col("tenure").cast(pl.String)), "tenure",
                                     _rows(rng, 0.03), ["abc", "12,5", "1.2.3", "n/a", "--", "TRUE",
                                                        "0x1F", "1e", "∞", "½", "seven", "?"])),
        "duplicate-ids.csv": _csv(_set(good, "customer_id", rows := _rows(rng, 0.10),
                                       [f"c{10_000 + i:05d}" for i in range(len(rows))])),
        "duplicate-ids-few.csv": _csv(_set(good, "customer_id", np.array([7, 8]), ["c10000", "c10001"])),
        "odd-ids.csv": _csv(_set(good, "customer_id", np.arange(len(ODD_IDS)), ODD_IDS)),
        "blank.csv": b"\n  \n\n",
        "header-only.csv": (",".join(good.columns) + "\n").encode(),
        "empty.parquet": good.clear(),
        "latin1.csv": text.encode("latin-1"),
        "utf16.csv": text.encode("utf-16"),
        "zero-byte.csv": b"",
        "zero-byte.parquet": b"",
    }
    paths = []
    for name, content in files.items():
        path = folder / name
        if isinstance(content, pl.DataFrame):
            _parquet(content, path)
        else:
            path.write_bytes(content)
        paths.append(path)
    whole = folder / "good.parquet.tmp"
    _parquet(good, whole)
    data = whole.read_bytes()
    whole.unlink()
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])  # a copy cut off half-way
    paths.append(folder / "truncated.parquet")
    return paths


def write_runtime_cases(folder: Path, seed: int = SEED) -> dict[str, Path]:
    """The inputs made at test time: a directory, a symbolic-link loop, a dangling link, a FIFO, a 50 MB line."""
    folder.mkdir(parents=True, exist_ok=True)
    good = dataset(seed + 1, first_id=10_000)
    out = {name: folder / file for name, file in (
        ("directory", "a-folder.csv"), ("symlink loop", "loop-a.csv"), ("dangling symlink", "gone.csv"),
        ("fifo", "pipe.csv"), ("50 MB line", "huge-line.csv"))}
    out["directory"].mkdir(exist_ok=True)
    (out["directory"] / "part-0.csv").write_text(good.write_csv())
    for link, target in (("loop-a.csv", "loop-b.csv"), ("loop-b.csv", "loop-a.csv"), ("gone.csv", "nowhere.csv")):
        if not (folder / link).is_symlink():
            (folder / link).symlink_to(target)
    if not out["fifo"].exists():
        os.mkfifo(out["fifo"])
    huge = _set(good, "city", np.array([200]), ["x" * (50 * 1024 * 1024)])  # one 50 MB line, row 200
    out["50 MB line"].write_bytes(_csv(huge))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=CORPUS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--runtime", action="store_true", help="also write the inputs made at test time")
    args = parser.parse_args(argv)
    paths = write_corpus(args.folder, args.seed)
    if args.runtime:
        paths += list(write_runtime_cases(args.folder, args.seed).values())
    size = sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())
    print(f"{len(paths)} files, {size / 1024:.0f} KB in {args.folder}")


if __name__ == "__main__":
    main()

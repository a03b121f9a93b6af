"""What a stage's result depends on besides its inputs: keel.core's own source and the libraries that shape
results. Both go into every cached task's key, so an upgrade or a fix never returns an answer computed by
other code."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CORE = Path(__file__).resolve().parents[1]  # the keel.core package
FLOWS = CORE.parent / "flows"  # keel.flows: the order of the stages and what each receives (read, never imported)
LIBRARIES = ("lightgbm", "alibi-detect", "scipy", "polars", "numpy")


def source_digest(root: Path) -> str:
    """SHA-256 over every Python file under `root`, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


@cache
def code_digest() -> str:
    """keel.core's source and the result-shaping libraries' versions, computed once per process."""
    blob = source_digest(CORE) + "".join(f"\n{k}=={v}" for k, v in sorted(library_versions().items()))
    return hashlib.sha256(blob.encode()).hexdigest()


@cache
def pipeline_digest() -> str:
    """What a whole run of a batch depends on besides its batch and keel.toml: the code digest and the flows'
    source (which stages run, in what order, with what). Kept on each run's row; a rerun under the same digest
    and configuration is answered from the store (keel.core.pipeline.recall)."""
    return hashlib.sha256(f"{code_digest()}\n{source_digest(FLOWS)}".encode()).hexdigest()

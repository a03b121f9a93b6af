"""The artifact store: content-addressed files, each verified against its SHA-256 on read."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from keel.core.data.batches import sha256_file
from keel.core.errors import ChecksumMismatch


class Artifacts:
    """Content-addressed files: every artifact is named by its SHA-256 and verified on read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str, suffix: str) -> Path:
        return self.root / sha[:2] / f"{sha}{suffix}"

    def _place(self, src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # atomic: a killed copy leaves no half file under the final name

    def put_file(self, src: Path, sha: str | None = None) -> tuple[str, Path]:
        sha = sha or sha256_file(src)
        dest = self.path(sha, src.suffix.lower())
        self._place(src, dest)
        return sha, dest

    def put_bytes(self, data: bytes, suffix: str) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha, suffix)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        return sha, dest

    def read_verified(self, uri: str | Path, sha: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``sha``."""
        path = Path(uri)
        if not path.exists():
            raise ChecksumMismatch(f"artifact {sha[:12]} is missing at {path}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ChecksumMismatch(
                f"artifact {path.name} does not match its SHA-256 (expected {sha[:12]}, found {actual[:12]})"
            )
        return data

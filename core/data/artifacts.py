"""The artifact store: content-addressed files, each verified against its SHA-256 on read.

Also the artifact store's error boundary: an OSError reading or writing here (permissions, a full or
read-only file system) becomes an ArtifactError naming the store, the file and the OS's reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from keel.core.data.batches import sha256_file
from keel.core.errors import ChecksumMismatch, artifact_errors, map_exceptions


class Artifacts:
    """Content-addressed files: every artifact is named by its SHA-256 and verified on read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str, suffix: str) -> Path:
        return self.root / sha[:2] / f"{sha}{suffix}"

    def _write(self, dest: Path, fill: Callable[[int, str], None]) -> None:
        """Create ``dest`` unless it exists: ``fill`` writes a temporary file beside it, which is then renamed
        (atomic: a killed or failed write leaves no half file under the final name, and no temporary one)."""
        with map_exceptions(artifact_errors(self.root, writing=True)):
            if dest.exists():
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:
                fill(fd, tmp)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def put_file(self, src: Path, sha: str | None = None) -> tuple[str, Path]:
        sha = sha or sha256_file(src)
        dest = self.path(sha, src.suffix.lower())

        def copy(fd: int, tmp: str) -> None:
            os.close(fd)
            shutil.copyfile(src, tmp)

        self._write(dest, copy)
        return sha, dest

    def put_bytes(self, data: bytes, suffix: str) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha, suffix)

        def write(fd: int, _tmp: str) -> None:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

        self._write(dest, write)
        return sha, dest

    @staticmethod
    def key(uri: str | Path) -> str:
        """An artifact's name inside any artifact store ("ab/abcd....txt"): where it is, without the store's root."""
        path = Path(uri)
        return f"{path.parent.name}/{path.name}"

    def read_verified(self, uri: str | Path, sha: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``sha``; `uri` is a path or a key."""
        path = Path(uri) if Path(uri).is_absolute() else self.root / uri
        if not path.exists():
            raise ChecksumMismatch(f"artifact {sha[:12]} is missing at {path}")
        with map_exceptions(artifact_errors(self.root, writing=False)):
            data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ChecksumMismatch(
                f"artifact {path.name} does not match its SHA-256 (expected {sha[:12]}, found {actual[:12]})"
            )
        return data

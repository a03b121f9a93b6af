"""The artifact store: content-addressed files, each verified against its SHA-256 on read.

The store is a local folder (a path or file:// URL) or any fsspec URL, e.g. ``s3://bucket/prefix`` (s3fs, the
``s3`` extra), so workers on other machines share it. Every artifact is ``<root>/<sha[:2]>/<sha><suffix>``
and appears under that name whole or not at all: locally through a temporary file renamed into place, on
object storage through one PUT (or a multipart upload, which is also invisible until it completes).

Also the artifact store's error boundary: an OSError (or, on S3, botocore's error) reading or writing here
becomes an ArtifactError naming the store, the file and the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keel.core.config import is_remote
from keel.core.data.batches import sha256_file
from keel.core.errors import ChecksumMismatch, ConfigError, artifact_errors, map_exceptions, mask_url
from keel.core.faults import crash_point

Location = Path | str
"""Where an artifact is: its local path, or its URL on a remote store."""


class Artifacts:
    """Content-addressed files: every artifact is named by its SHA-256 and verified on read."""

    def __init__(self, root: str | Path, options: Mapping[str, Any] | None = None) -> None:
        text = str(root)
        self.remote = is_remote(text)
        self.options = dict(options or {})
        if self.remote:
            self.url = text.rstrip("/")
            self.root: Path = Path()  # unused on a remote store
        else:
            self.root = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
            self.url = str(self.root)
        self._remote_fs: Any = None

    @property
    def where(self) -> str:
        """The store's location, safe to print (a password in the URL is masked)."""
        return mask_url(self.url)

    def path(self, sha: str, suffix: str) -> Path:
        """The artifact's local path (a local store only)."""
        return self.root / sha[:2] / f"{sha}{suffix}"

    def uri(self, sha: str, suffix: str) -> Location:
        """Where the artifact ``sha`` lives: its local path, or its full URL on a remote store."""
        return f"{self.url}/{sha[:2]}/{sha}{suffix}" if self.remote else self.path(sha, suffix)

    # --- writing -------------------------------------------------------------------------------

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
                crash_point("artifact:written")  # whole, but not yet under its name
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def _write_remote(self, url: str, upload: Callable[[Any, str], None]) -> None:
        """Create the object at ``url`` unless it exists, in one request that makes it whole or not at all."""
        with map_exceptions(artifact_errors(self.where, writing=True)):
            fs, path = self._fs_for(url)
            if not fs.exists(path):
                upload(fs, path)

    def put_file(self, src: Path, sha: str | None = None) -> tuple[str, Location]:
        """Store a copy of the file ``src``; returns its SHA-256 and where the copy is."""
        sha = sha or self._sha_of(src)
        if self.remote:
            url = str(self.uri(sha, src.suffix.lower()))
            self._write_remote(url, lambda fs, path: fs.put_file(str(src), path))
            return sha, url
        dest = self.path(sha, src.suffix.lower())

        def copy(fd: int, tmp: str) -> None:
            os.close(fd)
            shutil.copyfile(src, tmp)

        self._write(dest, copy)
        return sha, dest

    def put_bytes(self, data: bytes, suffix: str) -> tuple[str, Location]:
        """Store ``data``; returns its SHA-256 and where it is."""
        sha = hashlib.sha256(data).hexdigest()
        if self.remote:
            url = str(self.uri(sha, suffix))
            self._write_remote(url, lambda fs, path: fs.pipe_file(path, data))
            return sha, url
        dest = self.path(sha, suffix)

        def write(fd: int, _tmp: str) -> None:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

        self._write(dest, write)
        return sha, dest

    def _sha_of(self, src: Path) -> str:
        with map_exceptions(artifact_errors(self.where, writing=True)):
            return sha256_file(src)

    # --- reading -------------------------------------------------------------------------------

    @staticmethod
    def key(uri: str | Path) -> str:
        """An artifact's name inside any artifact store ("ab/abcd....txt"): where it is, without the store's root."""
        parts = str(uri).replace("\\", "/").rstrip("/").split("/")
        return "/".join(parts[-2:])

    def locate(self, uri: str | Path) -> Location:
        """Where ``uri`` is: a URL or an absolute local path as given, a key ("ab/abcd.txt") inside this store."""
        text = str(uri)
        if is_remote(text):
            return text
        if text.startswith("file://"):
            return Path(text[len("file://"):])
        if Path(text).is_absolute():
            return Path(text)
        return f"{self.url}/{text.lstrip('/')}" if self.remote else self.root / text

    def exists(self, uri: str | Path) -> bool:
        """Whether the artifact at ``uri`` (a URL, a path or a key) is there; it is not read."""
        where = self.locate(uri)
        if isinstance(where, Path):
            return where.is_file()
        with map_exceptions(artifact_errors(self.where, writing=False)):
            fs, path = self._fs_for(where)
            return bool(fs.exists(path))

    def read_verified(self, uri: str | Path, sha: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``sha``; `uri` is a URL, a path or a key."""
        where = self.locate(uri)
        name = Path(str(where)).name
        if isinstance(where, Path):
            if not where.exists():
                raise ChecksumMismatch(f"artifact {sha[:12]} is missing at {where}")
            with map_exceptions(artifact_errors(self.root, writing=False)):
                data = where.read_bytes()
        else:
            data = self._read_remote(where, sha)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ChecksumMismatch(
                f"artifact {name} does not match its SHA-256 (expected {sha[:12]}, found {actual[:12]})"
            )
        return data

    def _read_remote(self, url: str, sha: str) -> bytes:
        with map_exceptions(artifact_errors(self.where, writing=False)):
            fs, path = self._fs_for(url)
            try:
                return bytes(fs.cat_file(path))
            except FileNotFoundError:
                raise ChecksumMismatch(f"artifact {sha[:12]} is missing at {mask_url(url)}") from None

    def local_copy(self, uri: str | Path, sha: str, folder: Path) -> Path:
        """A local file holding the artifact: itself on a local store, else a verified download into ``folder``."""
        where = self.locate(uri)
        if isinstance(where, Path):
            if not where.exists():
                raise ChecksumMismatch(f"artifact {sha[:12]} is missing at {where}")
            return where
        dest = folder / Path(where).name
        if dest.exists() and self._sha_of(dest) == sha:
            return dest
        data = self.read_verified(where, sha)
        with map_exceptions(artifact_errors(folder, writing=True)):
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return dest

    # --- the remote file system -------------------------------------------------------------------

    def _fs_for(self, url: str) -> tuple[Any, str]:
        """The fsspec file system and path of ``url``; this store's options apply to URLs of its protocol."""
        import fsspec

        same = url.partition("://")[0].lower() == self.url.partition("://")[0].lower()
        if same and self._remote_fs is not None:
            return self._remote_fs, self._remote_fs._strip_protocol(url)
        try:
            fs, path = fsspec.core.url_to_fs(url, **(self.options if same else {}))
        except ImportError as exc:
            scheme = url.partition("://")[0]
            extra = " (pip install 'keel[s3]')" if scheme in ("s3", "s3a") else ""
            raise ConfigError(f"the artifact store {mask_url(url)} needs a library that is not installed{extra}: "
                              f"{exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the artifact store {mask_url(url)} cannot be opened with KEEL_ARTIFACTS_OPTIONS "
                              f"({exc})") from exc
        if same:
            self._remote_fs = fs
        return fs, path

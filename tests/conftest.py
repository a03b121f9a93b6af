"""Shared fixtures: an isolated KEEL_HOME per test, small real demo batches, one Prefect test server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Prefect reads its settings at import: point everything at a throwaway home before anything imports it.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="keel-tests-"))
os.environ["KEEL_HOME"] = str(_SESSION_HOME / "home")
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(_SESSION_HOME / "prefect" / "storage"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
for _key in ("KEEL_DATABASE_URL", "KEEL_ARTIFACTS_URL", "PREFECT_API_URL"):
    os.environ.pop(_key, None)

import polars as pl  # noqa: E402
import pytest  # noqa: E402

from keel.core.data.demo import DEMO_CONFIG, load_flights  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts the session's Prefect server is slow (end to end), marked or not."""
    for item in items:
        if "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def keel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh KEEL_HOME (store + artifacts) for one test; the working directory is beside it."""
    from keel.core.store.engine import dispose_engines

    home = tmp_path / ".keel"
    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield home
    dispose_engines()


@pytest.fixture(scope="session")
def flights() -> pl.DataFrame:
    return load_flights()


@pytest.fixture(scope="session")
def demo_slices(flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Months 1-4 of the real demo data, 3,000 rows each (seeded), as Parquet batches."""
    folder = tmp_path_factory.mktemp("batches")
    paths = []
    for month in range(1, 5):
        part = flights.filter(pl.col("month") == month).sample(3000, seed=month).sort("time_hour", "flight_id")
        path = folder / f"flights-2013-{month:02d}.parquet"
        part.write_parquet(path)
        paths.append(path)
    return paths


@pytest.fixture
def demo_config(keel_home: Path) -> Path:
    path = keel_home.parent / "keel.toml"
    path.write_text(DEMO_CONFIG)
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (real API, real task caching)."""
    from prefect.testing.utilities import prefect_test_harness

    from keel.flows.settings import configure_prefect

    configure_prefect()

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3-compatible server (moto's, from the test extra) on loopback for the session; its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the session's S3 server, with the standard AWS environment (dummy credentials,
    the endpoint, a region) pointing at it and nothing read from the machine's own AWS configuration."""
    import uuid

    import boto3

    aws = {"AWS_ACCESS_KEY_ID": "keel-test", "AWS_SECRET_ACCESS_KEY": "keel-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "KEEL_ARTIFACTS_OPTIONS"):
        monkeypatch.delenv(key, raising=False)
    bucket = f"keel-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_client(s3_server: str):
    """boto3 on the session's S3 server, for tests to look at (or tamper with) what keel stored there."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="keel-test",
                        aws_secret_access_key="keel-test-secret")

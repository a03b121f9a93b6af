"""The artifact store on S3: a real S3-compatible server (moto's) on loopback, reached through s3fs with the
standard AWS environment: the same client path keel takes to AWS S3 or any S3-compatible store."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from keel.core.config import Settings
from keel.core.data.artifacts import Artifacts
from keel.core.errors import ArtifactError, ChecksumMismatch, ConfigError


def _objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@pytest.fixture
def fresh_s3fs():
    """s3fs keeps one file system per set of options; forget them so each test sees its own environment."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_put_and_read_round_trip_on_s3_by_url_and_by_key(s3_client, s3_bucket, tmp_path, fresh_s3fs):
    store = Artifacts(f"s3://{s3_bucket}/keel/")
    sha, uri = store.put_bytes(b"model text", ".txt")
    assert sha == hashlib.sha256(b"model text").hexdigest()
    assert uri == f"s3://{s3_bucket}/keel/{sha[:2]}/{sha}.txt"
    assert store.put_bytes(b"model text", ".txt") == (sha, uri)  # content-addressed: the same bytes, one object
    batch = tmp_path / "Batch.CSV"
    batch.write_bytes(b"a,b\n1,2\n")
    batch_sha, batch_uri = store.put_file(batch)
    assert batch_uri == f"s3://{s3_bucket}/keel/{batch_sha[:2]}/{batch_sha}.csv"
    assert _objects(s3_client, s3_bucket) == {f"keel/{sha[:2]}/{sha}.txt": b"model text",
                                   f"keel/{batch_sha[:2]}/{batch_sha}.csv": b"a,b\n1,2\n"}
    assert store.read_verified(uri, sha) == b"model text"
    assert store.read_verified(Artifacts.key(uri), sha) == b"model text"  # the key form model refs carry
    assert Artifacts.key(uri) == f"{sha[:2]}/{sha}.txt"
    assert store.read_verified(batch_uri, batch_sha) == b"a,b\n1,2\n"


def test_a_failed_upload_leaves_no_object_under_any_name(s3_client, s3_bucket, tmp_path, fresh_s3fs):
    store = Artifacts(f"s3://{s3_bucket}/keel")
    store.put_bytes(b"kept", ".txt")
    missing = tmp_path / "gone.parquet"
    with pytest.raises(ArtifactError) as caught:
        store.put_file(missing, sha="ab" + "0" * 62)
    assert str(caught.value) == (f"cannot copy {missing} into the artifact store at s3://{s3_bucket}/keel "
                                 "(No such file or directory)")
    assert list(_objects(s3_client, s3_bucket)) == [f"keel/{hashlib.sha256(b'kept').hexdigest()[:2]}/"
                                         f"{hashlib.sha256(b'kept').hexdigest()}.txt"]


def test_an_object_overwritten_with_other_bytes_fails_its_checksum(s3_client, s3_bucket, fresh_s3fs):
    store = Artifacts(f"s3://{s3_bucket}/keel")
    sha, uri = store.put_bytes(b"model text", ".txt")
    s3_client.put_object(Bucket=s3_bucket, Key=f"keel/{Artifacts.key(uri)}", Body=b"model texT")
    for where in (uri, Artifacts.key(uri)):
        with pytest.raises(ChecksumMismatch, match=f"artifact {sha}.txt does not match its SHA-256"):
            store.read_verified(where, sha)


def test_a_missing_object_is_a_clear_integrity_error(s3_client, s3_bucket, fresh_s3fs):
    store = Artifacts(f"s3://{s3_bucket}/keel")
    sha, uri = store.put_bytes(b"model text", ".txt")
    s3_client.delete_object(Bucket=s3_bucket, Key=f"keel/{Artifacts.key(uri)}")
    with pytest.raises(ChecksumMismatch) as caught:
        store.read_verified(uri, sha)
    assert str(caught.value) == f"artifact {sha[:12]} is missing at {uri}"


def test_a_missing_bucket_fails_in_one_line_naming_the_store(s3_bucket, fresh_s3fs):
    store = Artifacts("s3://no-such-bucket-for-keel/keel")
    with pytest.raises(ArtifactError) as caught:
        store.put_bytes(b"model text", ".txt")
    assert str(caught.value) == ("cannot write the artifact store at s3://no-such-bucket-for-keel/keel "
                                 "(The specified bucket does not exist)")


def test_an_unreachable_endpoint_is_an_artifact_error_not_a_botocore_one(s3_bucket, monkeypatch, fresh_s3fs):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    store = Artifacts(f"s3://{s3_bucket}/keel", {"config_kwargs": {"retries": {"max_attempts": 1}}})
    with pytest.raises(ArtifactError) as caught:
        store.read_verified("ab/" + "ab" * 32 + ".txt", "ab" * 32)
    assert str(caught.value).startswith(f"cannot read the artifact store at s3://{s3_bucket}/keel (Could not connect")


def test_the_s3_specific_endpoint_variable_is_honoured(s3_bucket, s3_server, monkeypatch, fresh_s3fs):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # loses to the S3-specific one (nothing listens)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    store = Artifacts(f"s3://{s3_bucket}/keel")
    sha, uri = store.put_bytes(b"via AWS_ENDPOINT_URL_S3", ".txt")
    assert store.read_verified(uri, sha) == b"via AWS_ENDPOINT_URL_S3"


def test_storage_options_from_keel_artifacts_options_reach_s3fs(s3_client, s3_bucket, s3_server, monkeypatch,
                                                                fresh_s3fs):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # loses to the options' endpoint
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", f"s3://{s3_bucket}/team")
    monkeypatch.setenv("KEEL_ARTIFACTS_OPTIONS", json.dumps({"endpoint_url": s3_server}))
    settings = Settings()
    assert settings.artifacts_remote and settings.artifacts_root == f"s3://{s3_bucket}/team"
    store = Artifacts(settings.artifacts_root, settings.artifacts_storage_options)
    sha, uri = store.put_bytes(b"options", ".bin")
    assert store.read_verified(uri, sha) == b"options" and f"team/{Artifacts.key(uri)}" in _objects(s3_client, s3_bucket)


@pytest.mark.parametrize("options, message", [
    ('{"key": "AKIA-not-printed", "secret": "hunter2"}', "must not hold credentials ('key')"),
    ('{"client_kwargs": {"aws_secret_access_key": "hunter2"}}', "must not hold credentials ('aws_secret_access_key')"),
    ("{not json", "KEEL_ARTIFACTS_OPTIONS is not JSON"),
    ('["endpoint_url"]', "must be a JSON object"),
])
def test_bad_or_secret_artifacts_options_are_refused_without_printing_them(options, message, monkeypatch):
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", "s3://bucket/keel")
    monkeypatch.setenv("KEEL_ARTIFACTS_OPTIONS", options)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        _ = Settings().artifacts_storage_options
    assert "hunter2" not in str(caught.value) and "AKIA" not in str(caught.value)


def test_local_urls_stay_local_folders(tmp_path, monkeypatch):
    for url in (str(tmp_path / "a"), f"file://{tmp_path / 'a'}"):
        monkeypatch.setenv("KEEL_ARTIFACTS_URL", url)
        settings = Settings()
        assert not settings.artifacts_remote
        assert settings.artifacts_path == tmp_path / "a" and settings.artifacts_root == str(tmp_path / "a")
        store = Artifacts(settings.artifacts_root)
        sha, dest = store.put_bytes(b"local", ".txt")
        assert dest == tmp_path / "a" / sha[:2] / f"{sha}.txt" and dest.read_bytes() == b"local"
    monkeypatch.setenv("KEEL_ARTIFACTS_URL", "s3://bucket/keel")
    with pytest.raises(ConfigError, match="is not a local folder"):
        _ = Settings().artifacts_path


def test_a_local_copy_of_an_s3_artifact_is_verified_before_it_is_used(s3_client, s3_bucket, tmp_path, fresh_s3fs):
    store = Artifacts(f"s3://{s3_bucket}/keel")
    sha, uri = store.put_bytes(b"a,b\n1,2\n", ".csv")
    copy = store.local_copy(uri, sha, tmp_path / "replay")  # what replaying a quarantined batch runs on
    assert copy == tmp_path / "replay" / f"{sha}.csv" and copy.read_bytes() == b"a,b\n1,2\n"
    assert store.local_copy(Artifacts.key(uri), sha, tmp_path / "replay") == copy
    s3_client.put_object(Bucket=s3_bucket, Key=f"keel/{Artifacts.key(uri)}", Body=b"a,b\n1,3\n")
    with pytest.raises(ChecksumMismatch, match="does not match its SHA-256"):
        store.local_copy(uri, sha, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()

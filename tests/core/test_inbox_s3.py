"""An inbox on object storage: listed in order, and its batches ingested (fetched once, hashed, stored)."""

from __future__ import annotations

import io

import polars as pl
import pytest

from keel.core.errors import DataError
from keel.core.pipeline.inbox import list_inbox
from keel.core.pipeline.stages import ingest
from keel.core.workspace import Workspace


@pytest.fixture
def fresh_s3fs():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_batch_in_an_s3_inbox_is_listed_and_ingested_like_a_local_one(s3_client, s3_bucket, keel_home, tmp_path,
                                                                       fresh_s3fs):
    frames = {name: pl.DataFrame({"x": [1.0, 2.0, float(i)], "y": [0, 1, i % 2]}) for i, name in
              enumerate(["b.parquet", "a.parquet"])}
    for name, frame in frames.items():
        buf = io.BytesIO()
        frame.write_parquet(buf)
        s3_client.put_object(Bucket=s3_bucket, Key=f"incoming/{name}", Body=buf.getvalue())
    s3_client.put_object(Bucket=s3_bucket, Key="incoming/readme.txt", Body=b"not a batch")
    listed = list_inbox(f"s3://{s3_bucket}/incoming", None)
    assert sorted(b.path for b in listed) == [f"s3://{s3_bucket}/incoming/a.parquet",
                                             f"s3://{s3_bucket}/incoming/b.parquet"]
    config = tmp_path / "keel.toml"
    config.write_text('model = "m"\ntarget = "y"\n')
    ws = Workspace.open(config)
    batch = next(b for b in listed if b.path.endswith("a.parquet"))
    row = ingest(ws, batch.path)
    assert row["id"] == batch.sha256 and row["source"] == batch.path and row["rows"] == 3
    assert ingest(ws, batch.path)["id"] == row["id"], "the same bytes twice are the same dataset version"
    with pytest.raises(DataError, match="no such file"):
        ingest(ws, f"s3://{s3_bucket}/incoming/missing.parquet")

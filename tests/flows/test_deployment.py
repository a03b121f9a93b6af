"""prefect.yaml names a real flow with the parameters it takes."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deploys_run_pipeline_2():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    assert deployment["work_pool"]["name"] == "keel-process"
    path, name = deployment["entrypoint"].split(":")
    flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
    assert flow.name == "run_pipeline"
    params = inspect.signature(flow.fn).parameters
    assert set(deployment["parameters"]) <= set(params)

"""prefect.yaml names a real flow with the parameters it takes."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_names_real_flows_with_the_parameters_they_take_and_templates_nothing():
    from prefect.flows import load_flow_from_entrypoint

    text = (ROOT / "prefect.yaml").read_text()
    assert "{{" not in text, "nothing is templated from the environment of whoever deploys"
    spec = yaml.safe_load(text)
    assert spec["pull"] is None  # prefect deploy records the project folder as the flow runs' working directory
    flows = {}
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["name"] == "keel-process"
        path, name = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        flows[deployment["name"]] = flow.name
    assert flows == {"run-pipeline": "run_pipeline", "inbox": "scan_inbox", "score": "score_batch",
                     "review-sweeper": "sweep_reviews"}
    scheduled = {d["name"] for d in spec["deployments"] if d.get("schedules")}
    assert scheduled == {"inbox", "review-sweeper"}


def test_a_worker_loading_the_entrypoint_by_path_gets_keels_prefect_settings(tmp_path):
    """A process worker imports Prefect first, then loads flows/run_pipeline.py by path: keel's settings
    (state and task results under KEEL_HOME, telemetry off) must hold there all the same."""
    import json
    import os
    import subprocess
    import sys

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    entrypoint = spec["deployments"][0]["entrypoint"]
    assert entrypoint == "flows/run_pipeline.py:run_pipeline"
    code = (
        "import json, os, sys\n"
        "import prefect.context  # the flow-run process has Prefect loaded before the flow file\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "from prefect.settings import get_current_settings\n"
        "flow = load_flow_from_entrypoint(sys.argv[1])\n"
        "s = get_current_settings()\n"
        "print(json.dumps({'flow': flow.name, 'home': str(s.home), 'storage': str(s.results.local_storage_path),\n"
        "                  'persist': s.results.persist_by_default, 'analytics': s.server.analytics_enabled,\n"
        "                  'omp': os.environ.get('OMP_WAIT_POLICY'), 'keel_flows_imported': 'keel.flows' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_", "DO_NOT_TRACK", "OMP_"))}
    env["KEEL_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code, entrypoint], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    prefect_home = tmp_path / "home" / "prefect"
    assert seen["flow"] == "run_pipeline"
    assert seen["home"] == str(prefect_home)
    assert seen["storage"] == str(prefect_home / "storage")
    assert seen["persist"] is True and seen["analytics"] is False and seen["omp"] == "passive"

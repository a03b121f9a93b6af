"""Benchmark: what one Prefect flow run costs against a long-lived local server, before any keel code runs.

The floor under keel's per-batch cost (bench/perbatch.py): every batch is one flow run of `run_pipeline` with a
task run per cached stage. This starts `keel server start` in a fresh KEEL_HOME (untimed), then times, in one
process with Prefect's settings and API client as keel's commands have them (heartbeats off; one client shared
by every flow run, so no TLS context and no CSRF token per run), alternating, an empty flow and
a flow calling one empty task, each `--runs` times after one warm-up, and lists the API requests of one flow run
with their times (from the HTTP client). Then what Prefect's walk through a task's arguments costs: a flow calling
three tasks with arguments the size of the demo's model references (about 320, 200 and 160 values, as keel's
monitor, drift and score tasks take), passed as they are and wrapped in `opaque` (as keel passes them: Prefect
takes the value without walking inside it).

Run:  PYTHONPATH=. python bench/prefect_floor.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402


def measure(runs: int) -> None:
    from keel.flows.settings import configure_prefect

    configure_prefect()
    import httpx
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.utilities.annotations import opaque

    from keel.cli.pipeline import _quiet_prefect, _share_client

    _quiet_prefect()
    _share_client(PREFECT_API_URL.value())  # one API client for every flow run, as keel's commands have
    requests: list[tuple[str, str, float]] = []

    def note(request: Any, start: float) -> None:
        requests.append((request.method, request.url.path.split("/api", 1)[-1][:24],
                         (time.perf_counter() - start) * 1000))

    def timed(send: Any) -> Any:  # the engine's synchronous client
        def timed_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            response = send(self, request, *args, **kwargs)
            note(request, start)
            return response
        return timed_send

    def atimed(send: Any) -> Any:
        async def timed_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            response = await send(self, request, *args, **kwargs)
            note(request, start)
            return response
        return timed_send

    httpx.Client.send = timed(httpx.Client.send)  # type: ignore[method-assign]
    httpx.AsyncClient.send = atimed(httpx.AsyncClient.send)  # type: ignore[method-assign]

    @task
    def empty_task(x: int) -> int:
        return x

    @flow(validate_parameters=False)
    def empty_flow(x: int) -> int:
        return x

    @flow(validate_parameters=False)
    def flow_with_a_task(x: int) -> int:
        return empty_task(x)

    @task
    def takes_a_reference(ref: dict[str, Any], x: int) -> int:
        return x

    refs = [model_reference(n) for n in (320, 200, 160)]

    @flow(validate_parameters=False)
    def three_tasks_plain(x: int) -> int:
        return sum(takes_a_reference(ref, x) for ref in refs)

    @flow(validate_parameters=False)
    def three_tasks_opaque(x: int) -> int:
        return sum(takes_a_reference(opaque(ref), opaque(x)) for ref in refs)

    flows = {"empty flow": empty_flow, "flow with one task": flow_with_a_task,
             "3 tasks, references as they are": three_tasks_plain, "3 tasks, references opaque": three_tasks_opaque}
    times: dict[str, list[float]] = {name: [] for name in flows}
    listed: dict[str, list[tuple[str, str, float]]] = {}
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for fn in flows.values():
            fn(0)
        for i in range(runs):
            for name, fn in flows.items():
                requests.clear()
                start = time.perf_counter()
                fn(i)
                times[name].append((time.perf_counter() - start) * 1000)
                listed[name] = list(requests)
    for name, values in times.items():
        api = sum(ms for _, _, ms in listed[name])
        print(f"{name:32s} median {statistics.median(values):6.1f} ms over {runs} runs; one run's "
              f"{len(listed[name])} API requests {api:.1f} ms:")
        print("    " + ", ".join(f"{method} {path} {ms:.1f}" for method, path, ms in listed[name]))
    plain, wrapped = (statistics.median(times[k]) for k in ("3 tasks, references as they are",
                                                            "3 tasks, references opaque"))
    print(f"opaque arguments save {plain - wrapped:.1f} ms a flow run of three such tasks "
          f"({(plain - wrapped) / 3:.1f} ms a task)")


def model_reference(values: int) -> dict[str, Any]:
    """A dict shaped like keel's model reference (spec, categories, importance, contract) with about ``values``
    values in all: the number Prefect visits when it walks the argument."""
    features = [f"feature_{i}" for i in range(15)]
    ref: dict[str, Any] = {"id": 1, "version": 1, "sha256": "0" * 64, "uri": "models/0.txt",
                           "spec": {"features": features, "categorical": features[:3], "target": "late"},
                           "importance": dict.fromkeys(features, 1.0), "categories": {}}
    left = values - 40
    for i, name in enumerate(features[:3]):
        n = left // (3 - i)
        ref["categories"][name] = [f"{name}-{j}" for j in range(n)]
        left -= n
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        measure(args.runs)
        return
    with tempfile.TemporaryDirectory(prefix="keel-prefect-floor-") as folder:
        home = Path(folder)
        env = bench.child_env(home)  # none of the caller's PREFECT_ or KEEL_ settings: this home's server only
        bench.keel_cli(env, home, "server", "start")
        try:
            subprocess.run([sys.executable, __file__, "--inner", "--runs", str(args.runs)], env=env, check=True,
                           cwd=home)
        finally:
            bench.keel_cli(env, home, "server", "stop")


if __name__ == "__main__":
    main()

"""Benchmark: what one Prefect flow run costs against a long-lived local server, before any keel code runs.

The floor under keel's per-batch cost (bench/perbatch.py): every batch is one flow run of `run_pipeline` with a
task run per cached stage. This starts `keel server start` in a fresh KEEL_HOME (untimed), then times, in one
process with Prefect's settings as keel sets them (heartbeats off, as keel's runs), alternating, an empty flow and
a flow calling one empty task, each `--runs` times after one warm-up, and lists the API requests of one flow run
with their times (from the HTTP client).

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
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from keel.cli.pipeline import _quiet_prefect

    _quiet_prefect()
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

    times: dict[str, list[float]] = {"empty flow": [], "flow with one task": []}
    listed: dict[str, list[tuple[str, str, float]]] = {}
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        empty_flow(0), flow_with_a_task(0)
        for i in range(runs):
            for name, fn in (("empty flow", empty_flow), ("flow with one task", flow_with_a_task)):
                requests.clear()
                start = time.perf_counter()
                fn(i)
                times[name].append((time.perf_counter() - start) * 1000)
                listed[name] = list(requests)
    for name, values in times.items():
        api = sum(ms for _, _, ms in listed[name])
        print(f"{name:20s} median {statistics.median(values):6.1f} ms over {runs} runs; one run's "
              f"{len(listed[name])} API requests {api:.1f} ms:")
        print("    " + ", ".join(f"{method} {path} {ms:.1f}" for method, path, ms in listed[name]))


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

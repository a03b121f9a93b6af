"""Runs whose process died (a worker killed, a machine lost) are told apart by Prefect's own flow-run
heartbeats: workers run flows with PREFECT_FLOWS_HEARTBEAT_FREQUENCY set (30 s in keel's documentation),
and a run of the model that is Running in Prefect, has sent heartbeats, and sent none for `after` seconds
is set Crashed by the inbox scan. The scan then starts its batch again, and the restarted run leaves the
store as if nothing had happened. A run that never sent a heartbeat (a worker without the setting) is
never judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.states import Crashed

HEARTBEAT = "prefect.flow-run.heartbeat"


def crash_silent_runs(tags: list[str], after: int) -> list[str]:
    """Set Crashed every Running flow run with these tags whose heartbeats stopped `after` seconds ago."""
    now = datetime.now(UTC)
    crashed = []
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=tags),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
        for run in running:
            beats = EventFilter(event=EventNameFilter(name=[HEARTBEAT]),
                                resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                                occurred=EventOccurredFilter(since=now - timedelta(days=1), until=now))
            found = client.read_events(beats, limit=50).events
            if not found or max(e.occurred for e in found) > now - timedelta(seconds=after):
                continue
            client.set_flow_run_state(run.id, Crashed(message=f"no heartbeat for {after} s: its process is gone"),
                                      force=True)
            crashed.append(str(run.id))
    return crashed

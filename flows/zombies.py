"""Runs whose process died (a worker killed, a machine lost) are marked Crashed by Prefect itself: an
automation, made by the inbox on first use, crashes a flow run whose heartbeats stopped for `after` seconds
(workers run flows with PREFECT_FLOWS_HEARTBEAT_FREQUENCY set, 30 s by keel's documentation). The next
inbox scan then starts the batch again, and the restarted run leaves the store as if nothing happened."""

from __future__ import annotations

from datetime import timedelta

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

NAME = "keel: crash flow runs whose heartbeats stopped"
# a run that ends, or waits for a review (suspended or paused), stops beating and is no zombie
ENDS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed", "Suspended",
                                                   "Paused")}


def zombie_automation(after: int) -> AutomationCore:
    return AutomationCore(
        name=NAME, description=f"Marks a flow run Crashed when no heartbeat came for {after} s.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *ENDS},
            match={"prefect.resource.id": ["prefect.flow-run.*"]}, for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=after)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after} s: its process is gone")],
    )


def ensure_zombie_automation(after: int) -> None:
    """Create the automation, or bring it to `after` seconds; one API call when it is already right."""
    wanted = zombie_automation(after)
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(NAME)
        if not found:
            client.create_automation(wanted)
            return
        current = found[0]
        if getattr(current.trigger, "within", None) != wanted.trigger.within:  # type: ignore[union-attr]
            client.update_automation(current.id, wanted)
        for extra in found[1:]:  # two inboxes racing on first use: keep one
            client.delete_automation(extra.id)

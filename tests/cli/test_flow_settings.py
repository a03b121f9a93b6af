"""The settings each flow run of a command runs under: Prefect's, with keel's updates, validated once."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings

from keel.cli.pipeline import _flow_settings
from keel.flows.settings import configure_prefect


def test_flow_runs_share_one_copy_of_the_settings_until_the_settings_or_the_updates_change(monkeypatch):
    configure_prefect()
    updates = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with _flow_settings(updates):
        first = get_current_settings()
    with _flow_settings(dict(updates)):
        assert get_current_settings() is first  # the same updates on the same settings: no new copy
    assert first.flows.heartbeat_frequency is None
    assert get_current_settings() is not first  # left again on exit
    assert get_current_settings().flows.heartbeat_frequency is not None

    with _flow_settings({**updates, PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        other = get_current_settings()
        assert other is not first and str(other.api.url) == "http://127.0.0.1:9/api"

    monkeypatch.setenv("PREFECT_API_REQUEST_TIMEOUT", "17")  # a PREFECT_ variable changed: Prefect reads them again
    configure_prefect()
    try:
        with _flow_settings(updates):
            changed = get_current_settings()
        assert changed is not first and changed.api.request_timeout == 17
        assert changed.flows.heartbeat_frequency is None
    finally:
        monkeypatch.delenv("PREFECT_API_REQUEST_TIMEOUT")
        configure_prefect()

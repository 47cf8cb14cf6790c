"""The real service for the alert tests: uvicorn in a thread on 127.0.0.1 (port chosen by the OS), or in a
subprocess (``service_process``), with short delivery timings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sapo_monitor.service.app import create_app
from sapo_monitor.service.settings import AlertingSettings, Settings

from tests.support.live import ServiceProcess, serve_in_thread

FAST = AlertingSettings(
    webhook_backoff_base_s=0.05, webhook_backoff_max_s=0.2, outbox_poll_s=0.02, webhook_timeout_s=2.0,
    webhook_lease_s=3.0, silent_check_s=0.2,
    webhook_allow_hosts="127.0.0.1",  # the receivers are on loopback
    incident_group_wait_s=0.0, incident_group_interval_s=0.0,  # tell each incident change at the next round
)
# The subprocess equivalent (``service_process``): settings through the environment.
FAST_ENV = {
    "SAPO_MONITOR_WEBHOOK_LEASE_S": "1.5",
    "SAPO_MONITOR_WEBHOOK_TIMEOUT_S": "1.0",
    "SAPO_MONITOR_WEBHOOK_BACKOFF_BASE_S": "0.05",
    "SAPO_MONITOR_WEBHOOK_BACKOFF_MAX_S": "0.2",
    "SAPO_MONITOR_OUTBOX_POLL_S": "0.05",
    "SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "SAPO_MONITOR_INCIDENT_GROUP_WAIT_S": "0",
    "SAPO_MONITOR_INCIDENT_GROUP_INTERVAL_S": "0",
}


@contextmanager
def live_service(db_url: str, *, auth: str = "off", alerting: AlertingSettings = FAST) -> Iterator[str]:
    """Yields the base URL of a running service on ``db_url``."""
    app = create_app(Settings(db=db_url, host="127.0.0.1", port=0, auth=auth))
    app.state.alerting_settings = alerting
    with serve_in_thread(app, timeout=20) as base:
        yield base


def service_process(db_url: str, **env: str) -> ServiceProcess:
    """The service as a subprocess (not started) on ``db_url`` with the short delivery timings of
    ``FAST_ENV``; ``env`` adds or overrides ``SAPO_MONITOR_*`` settings."""
    return ServiceProcess(db_url, env={**FAST_ENV, **env})

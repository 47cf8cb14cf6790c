"""Upload the shipped dashboards (and optionally a Prometheus datasource) to a running Grafana.

Idempotent: each object is read first and written only when it differs from what we ship, so a
second push reports everything ``unchanged`` and writes nothing. Dashboards are compared without
the fields Grafana manages itself (``id``, ``version``), so a dashboard edited in the UI is put back.
Talks to Grafana's HTTP API through ``grafana-client`` (``pip install 'sapo-monitor[grafana]'``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

__all__ = ["DATASOURCE_UID", "FOLDER_UID", "Change", "push"]

FOLDER_UID = "sapo-monitor"
FOLDER_TITLE = "sapo-monitor"
DATASOURCE_UID = "sapo-prometheus"
DATASOURCE_NAME = "sapo-monitor Prometheus"
PUSH_MESSAGE = "sapo-monitor grafana push"

# Fields Grafana sets on its own copy: never a reason to write.
_SERVER_MANAGED = ("id", "version")
# Datasource fields we own; the rest (ids, orgId, readOnly, secure fields...) belong to Grafana.
_DATASOURCE_FIELDS = ("name", "type", "access", "url", "jsonData")

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Change:
    """What one push did to one Grafana object."""

    kind: Literal["folder", "datasource", "dashboard"]
    uid: str
    title: str
    action: Action


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


def _get_or_none(fetch: Any, uid: str) -> dict[str, Any] | None:
    """``fetch(uid)`` or ``None`` when Grafana answers 404; other errors propagate."""
    from grafana_client.client import GrafanaClientError

    try:
        return fetch(uid)
    except GrafanaClientError as exc:
        if _is_not_found(exc):
            return None
        raise


def _ensure_folder(api: GrafanaApi, uid: str, title: str) -> Change:
    current = _get_or_none(api.folder.get_folder, uid)
    if current is None:
        api.folder.create_folder(title, uid=uid)
        return Change("folder", uid, title, "created")
    if current.get("title") != title:
        api.folder.update_folder(uid, title=title, overwrite=True)
        return Change("folder", uid, title, "updated")
    return Change("folder", uid, title, "unchanged")


def _datasource_body(url: str) -> dict[str, Any]:
    return {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }


def _ensure_datasource(api: GrafanaApi, url: str) -> Change:
    wanted = _datasource_body(url)
    current = _get_or_none(api.datasource.get_datasource_by_uid, DATASOURCE_UID)
    if current is None:
        api.datasource.create_datasource(wanted)
        return Change("datasource", DATASOURCE_UID, DATASOURCE_NAME, "created")
    current_json = current.get("jsonData") or {}
    differs = any(current.get(key) != wanted[key] for key in _DATASOURCE_FIELDS if key != "jsonData") or any(
        current_json.get(key) != value for key, value in wanted["jsonData"].items()
    )
    if differs:
        api.datasource.update_datasource_by_uid(DATASOURCE_UID, wanted)
        return Change("datasource", DATASOURCE_UID, DATASOURCE_NAME, "updated")
    return Change("datasource", DATASOURCE_UID, DATASOURCE_NAME, "unchanged")


def _comparable(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _SERVER_MANAGED}


def _with_datasource(dashboard: dict[str, Any], uid: str, name: str) -> dict[str, Any]:
    """The dashboard with its ``datasource`` variable opening on the pushed datasource."""
    out = copy.deepcopy(dashboard)
    for var in out.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            var["current"] = {"selected": True, "text": name, "value": uid}
    return out


def _ensure_dashboard(api: GrafanaApi, dashboard: dict[str, Any], folder_uid: str) -> Change:
    uid, title = dashboard["uid"], dashboard["title"]
    current = _get_or_none(api.dashboard.get_dashboard, uid)
    if current is not None:
        same_body = _comparable(current.get("dashboard", {})) == _comparable(dashboard)
        same_folder = current.get("meta", {}).get("folderUid", "") == folder_uid
        if same_body and same_folder:
            return Change("dashboard", uid, title, "unchanged")
    body = {
        # id None + overwrite: Grafana matches on uid, so this creates or replaces in place.
        "dashboard": {**_comparable(dashboard), "id": None},
        "folderUid": folder_uid,
        "overwrite": True,
        "message": PUSH_MESSAGE,
    }
    api.dashboard.update_dashboard(body)
    return Change("dashboard", uid, title, "created" if current is None else "updated")


def push(
    api: GrafanaApi,
    dashboards: Mapping[str, dict[str, Any]],
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    datasource_url: str | None = None,
) -> list[Change]:
    """Bring Grafana in line with ``dashboards``; return one :class:`Change` per object, in order.

    With ``datasource_url`` a Prometheus datasource (uid ``sapo-prometheus``) pointing there is
    created or updated too, and the dashboards open on it.
    """
    changes = [_ensure_folder(api, folder_uid, folder_title)]
    if datasource_url is not None:
        changes.append(_ensure_datasource(api, datasource_url))
    for dashboard in dashboards.values():
        if datasource_url is not None:
            dashboard = _with_datasource(dashboard, DATASOURCE_UID, DATASOURCE_NAME)
        changes.append(_ensure_dashboard(api, dashboard, folder_uid))
    return changes

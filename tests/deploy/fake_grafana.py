"""A small HTTP server that answers like Grafana's HTTP API and records every request.

Only the endpoints ``grafana push`` uses, with the status codes and body shapes Grafana documents
(https://grafana.com/docs/grafana/latest/developers/http_api/ : dashboard, folder, data source):

- ``GET /api/folders/:uid`` 200 folder | 404 ``{"message": "folder not found"}``
- ``POST /api/folders`` ``{"uid", "title"}`` -> 200 folder | 409 when the uid exists
- ``PUT /api/folders/:uid`` ``{"title", "version"|"overwrite"}`` -> 200 folder | 412 version mismatch
- ``GET /api/datasources/uid/:uid`` 200 datasource | 404 ``{"message": "Data source not found"}``
- ``POST /api/datasources`` -> 200 ``{"datasource", "id", "message": "Datasource added", "name"}`` | 409 same name
- ``PUT /api/datasources/uid/:uid`` (the whole datasource) -> 200 ``{"datasource", "id", "message":
  "Datasource updated", "name"}`` | 400 without name, type or access
- ``GET /api/dashboards/uid/:uid`` 200 ``{"dashboard", "meta": {"folderUid", ...}}`` | 404
- ``POST /api/dashboards/db`` ``{"dashboard", "folderUid", "overwrite", "message"}`` -> 200
  ``{"id", "uid", "url", "status": "success", "version", "slug"}``; 412 ``name-exists`` when the uid
  exists and ``overwrite`` is false; 400 without a title; 400 when ``folderUid`` names no folder.

Every request needs ``Authorization: Bearer <token>``; anything else gets 401 ``{"message": "Unauthorized"}``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class GrafanaState:
    token: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid"}
    requests: list[Recorded] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class _Handler(BaseHTTPRequestHandler):
    state: GrafanaState
    lock: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self.lock:
            self.state.requests.append(Recorded(method, self.path, dict(self.headers.items()), body))
            if self.headers.get("Authorization") != f"Bearer {self.state.token}":
                return self._reply(401, {"message": "Unauthorized"})
            status, out = self._route(method, self.path.split("?")[0], body)
        self._reply(status, out)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        s = self.state
        if m := re.fullmatch(r"/api/folders/([^/]+)", path):
            uid = m.group(1)
            if uid not in s.folders:
                return 404, {"message": "folder not found", "status": "not-found"}
            if method == "GET":
                return 200, s.folders[uid]
            if method == "PUT":
                folder = s.folders[uid]
                if not body.get("overwrite") and body.get("version") != folder["version"]:
                    return 412, {
                        "message": "the folder has been changed by someone else",
                        "status": "version-mismatch",
                    }
                folder.update(title=body["title"], version=folder["version"] + 1)
                return 200, folder
        if path == "/api/folders" and method == "POST":
            uid = body.get("uid") or f"f{s.next_id}"
            if uid in s.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            s.folders[uid] = {
                "id": s.new_id(),
                "uid": uid,
                "title": body["title"],
                "url": f"/dashboards/f/{uid}/",
                "version": 1,
            }
            return 200, s.folders[uid]
        if m := re.fullmatch(r"/api/datasources/uid/([^/]+)", path):
            uid = m.group(1)
            if uid not in s.datasources:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, s.datasources[uid]
            if method == "PUT":
                missing = [k for k in ("name", "type", "access") if not body.get(k)]
                if missing:  # Grafana binds the whole datasource: a partial update is a 400
                    return 400, {"message": f"bad request data: {missing[0]} is required"}
                ds = s.datasources[uid]
                ds.update({k: v for k, v in body.items() if k != "id"})
                ds["version"] += 1
                return 200, {
                    "datasource": ds,
                    "id": ds["id"],
                    "message": "Datasource updated",
                    "name": ds["name"],
                }
        if path == "/api/datasources" and method == "POST":
            if not body.get("name") or not body.get("type") or not body.get("access"):
                return 400, {"message": "bad request data: name, type and access are required"}
            if any(d["name"] == body["name"] for d in s.datasources.values()):
                return 409, {"message": "data source with the same name already exists"}
            uid = body.get("uid") or f"ds{s.next_id}"
            ds = {
                "id": s.new_id(),
                "orgId": 1,
                "basicAuth": False,
                "readOnly": False,
                "version": 1,
                "secureJsonFields": {},
                **body,
                "uid": uid,
            }
            ds["jsonData"] = {**body.get("jsonData", {}), "grafanaAddedThis": True}  # Grafana adds defaults
            s.datasources[uid] = ds
            return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}
        if m := re.fullmatch(r"/api/dashboards/uid/([^/]+)", path):
            uid = m.group(1)
            if uid not in s.dashboards:
                return 404, {"message": "Dashboard not found"}
            stored = s.dashboards[uid]
            meta = {
                "folderUid": stored["folderUid"],
                "slug": _slug(stored["dashboard"]["title"]),
                "url": f"/d/{uid}/{_slug(stored['dashboard']['title'])}",
                "version": stored["dashboard"]["version"],
                "provisioned": False,
            }
            return 200, {"dashboard": stored["dashboard"], "meta": meta}
        if path == "/api/dashboards/db" and method == "POST":
            dash = dict(body["dashboard"])
            if not dash.get("title"):
                return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
            folder_uid = body.get("folderUid", "")
            if folder_uid and folder_uid not in s.folders:
                return 400, {"message": "folder not found", "status": "folder-not-found"}
            uid = dash.get("uid") or f"d{s.next_id}"
            old = s.dashboards.get(uid)
            if old is not None and not body.get("overwrite"):
                return 412, {
                    "message": "A dashboard with the same uid already exists",
                    "status": "name-exists",
                }
            dash.update(
                uid=uid,
                id=old["dashboard"]["id"] if old else s.new_id(),
                version=old["dashboard"]["version"] + 1 if old else 1,
            )
            s.dashboards[uid] = {"dashboard": dash, "folderUid": folder_uid}
            return 200, {
                "id": dash["id"],
                "uid": uid,
                "url": f"/d/{uid}/{_slug(dash['title'])}",
                "status": "success",
                "version": dash["version"],
                "slug": _slug(dash["title"]),
            }
        return 404, {"message": "Not found"}

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


class FakeGrafana:
    """Run the fake on 127.0.0.1 on a free port in a background thread."""

    def __init__(self, token: str) -> None:
        self.state = GrafanaState(token=token)
        handler = type("Handler", (_Handler,), {"state": self.state, "lock": threading.Lock()})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[Recorded]:
        return [r for r in self.state.requests if r.method != "GET"]

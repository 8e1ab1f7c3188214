"""A fake Argo server for tests: the few REST endpoints submit.py uses, on 127.0.0.1 in a thread.

It behaves like the real server where submit.py depends on it: bearer-token auth, 404 for unknown
namespaces and resources, 409 for duplicate creates and stale resourceVersions, server-added labels,
and a base path (the ingress prefix) outside of which everything is 404.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATOR_LABEL = "workflows.argoproj.io/creator"
_ROUTES = (
    ("workflow-templates", "template", "workflowtemplates.argoproj.io"),
    ("cron-workflows", "cronWorkflow", "cronworkflows.argoproj.io"),
    ("workflows", "workflow", "workflows.argoproj.io"),
)


@dataclass
class Request:
    """One request the fake received."""

    method: str
    path: str
    authorization: str | None
    body: dict | None


@dataclass
class FakeArgo:
    """State and behaviour of the fake; start it with `running()`.

    Attributes:
        base_path: prefix the server lives under (like `--base-href` behind an ingress).
        namespaces: namespaces that exist; anything else answers 404 like the real server.
        token: the bearer token required (None: server auth mode, no header needed).
        forbidden_tokens: tokens that authenticate but lack RBAC (403).
        phases: statuses successive GETs of a submitted workflow return (the last one repeats).
        hide_on_first_get: names whose first GET answers 404 although they exist (a create race).
        stale_puts: answer every PUT with 409, as if someone else updated the object first.
        html_only: answer everything with the UI's HTML page and 200 (a URL that misses the API).
        template_cache_lag: how many creates of a cron or workflow that references a template
            answer "not found" after the template exists, as argo-server's template informer
            does until it has seen it (400 for crons, 404 for workflows; argo v4.1.2
            server/cronworkflow/cron_workflow_server.go, server/workflow/workflow_server.go).
        forbid_deletes: answer DELETE with 403, as for a token whose Role lacks `delete`.
    """

    base_path: str = "/argo/"
    namespaces: set[str] = field(default_factory=lambda: {"mlops"})
    token: str | None = None
    forbidden_tokens: set[str] = field(default_factory=set)
    phases: list[dict] = field(default_factory=list)
    hide_on_first_get: set[str] = field(default_factory=set)
    stale_puts: bool = False
    html_only: bool = False
    template_cache_lag: int = 0
    forbid_deletes: bool = False
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _gets: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The server URL including the base path, e.g. `http://127.0.0.1:PORT/argo/`."""
        assert self._server is not None, "not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    def start(self) -> FakeArgo:
        """Listen on a free loopback port and serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """A stored object (`kind` is the URL segment, e.g. `workflow-templates`)."""
        return self.objects.get((kind, namespace, name))

    def writes(self) -> list[Request]:
        """The POST and PUT requests received so far."""
        return [r for r in self.requests if r.method in ("POST", "PUT")]

    # --- request handling ----------------------------------------------------------------------

    def _handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        auth = http.headers.get("Authorization")
        with self._lock:
            # A copy: the stored object is mutated later (resourceVersion bumps).
            self.requests.append(Request(method, http.path, auth, copy.deepcopy(body)))
            status, payload = self._route(method, http.path.split("?")[0], auth, body)
        content_type = "application/json"
        if self.html_only:
            status, payload, content_type = 200, None, "text/html"
        data = (
            b"<!doctype html><title>Argo</title>"
            if payload is None
            else json.dumps(payload).encode()
        )
        http.send_response(status)
        http.send_header("Content-Type", content_type)
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _route(self, method: str, path: str, auth: str | None, body: dict | None):
        if not path.startswith(self.base_path):
            return 404, {"code": 5, "message": "404 page not found"}
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, {
                "code": 16,
                "message": "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/",
            }
        if auth is not None and auth.removeprefix("Bearer ") in self.forbidden_tokens:
            return 403, {
                "code": 7,
                "message": 'workflowtemplates.argoproj.io is forbidden: User "viewer" cannot get',
            }
        match = re.fullmatch(r"api/v1/([a-z-]+)/([^/]+)(?:/([^/]+))?", path[len(self.base_path) :])
        routes = {segment: (key, resource) for segment, key, resource in _ROUTES}
        if match is None or match.group(1) not in routes:
            return 404, {"code": 5, "message": "Not Found"}
        kind, namespace, name = match.groups()
        key, resource = routes[kind]
        if namespace not in self.namespaces:
            return 404, {"code": 5, "message": f'namespaces "{namespace}" not found'}
        if name is None and method == "POST":
            obj = (body or {}).get(key) or {}
            refused = self._template_not_cached(kind, namespace, obj)
            if refused:
                return refused
            return self._create(kind, namespace, resource, obj)
        if name is not None and method == "DELETE":
            if self.forbid_deletes:
                return 403, {
                    "code": 7,
                    "message": f'{resource} "{name}" is forbidden: cannot delete',
                }
            if self.objects.pop((kind, namespace, name), None) is None:
                return 404, {"code": 5, "message": f'{resource} "{name}" not found'}
            return 200, {}
        if name is not None and method == "GET":
            return self._get(kind, namespace, name, resource)
        if name is not None and method == "PUT":
            return self._update(kind, namespace, name, resource, (body or {}).get(key) or {})
        return 405, {"code": 12, "message": "method not allowed"}

    def _template_not_cached(self, kind: str, namespace: str, obj: dict):
        """argo-server's validation of `workflowTemplateRef` against its template informer."""
        spec = obj.get("spec", {})
        ref = (spec.get("workflowSpec", spec) or {}).get("workflowTemplateRef")
        if kind not in ("cron-workflows", "workflows") or not ref:
            return None
        exists = ("workflow-templates", namespace, ref["name"]) in self.objects
        if exists and self.template_cache_lag <= 0:
            return None
        if exists:
            self.template_cache_lag -= 1
        message = f'workflowtemplate.argoproj.io "{ref["name"]}" not found'
        if kind == "cron-workflows":
            return 400, {"code": 3, "message": f"cannot validate Workflow: {message}"}
        return 404, {"code": 5, "message": message}

    def _create(self, kind: str, namespace: str, resource: str, obj: dict):
        meta = obj.setdefault("metadata", {})
        if kind == "workflows" and not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'wf-')}{next(self._versions):05d}"
        name = meta.get("name")
        if not name:
            return 400, {"code": 3, "message": "name or generateName is required"}
        if (kind, namespace, name) in self.objects:
            return 409, {"code": 6, "message": f'{resource} "{name}" already exists'}
        meta.update(
            namespace=namespace, uid=f"uid-{name}", creationTimestamp="2026-11-26T07:00:00Z"
        )
        _server_metadata(meta)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, namespace, name)] = obj
        return 200, obj

    def _get(self, kind: str, namespace: str, name: str, resource: str):
        key = (kind, namespace, name)
        self._gets[key] = self._gets.get(key, 0) + 1
        obj = self.objects.get(key)
        if obj is None or (name in self.hide_on_first_get and self._gets[key] == 1):
            return 404, {"code": 5, "message": f'{resource} "{name}" not found'}
        obj = copy.deepcopy(obj)
        if kind == "workflows" and self.phases:
            obj["status"] = self.phases[min(self._gets[key], len(self.phases)) - 1]
        return 200, obj

    def _update(self, kind: str, namespace: str, name: str, resource: str, obj: dict):
        current = self.objects.get((kind, namespace, name))
        if current is None:
            return 404, {"code": 5, "message": f'{resource} "{name}" not found'}
        sent = obj.get("metadata", {}).get("resourceVersion")
        if self.stale_puts or sent != current["metadata"]["resourceVersion"]:
            return 409, {
                "code": 10,
                "message": f'Operation cannot be fulfilled on {resource} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            }
        meta = obj["metadata"]
        meta.update({k: current["metadata"][k] for k in ("uid", "creationTimestamp", "namespace")})
        _server_metadata(meta)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, namespace, name)] = obj
        return 200, obj


def _server_metadata(meta: dict) -> None:
    """What the real server and API server add: the creator label and managedFields."""
    meta.setdefault("labels", {})[CREATOR_LABEL] = "system-serviceaccount-argo-argo-server"
    meta["managedFields"] = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, f"f:{CREATOR_LABEL}": {}}}},
            "manager": "argo",
            "operation": "Update",
            "time": "2026-11-26T07:00:00Z",
        }
    ]

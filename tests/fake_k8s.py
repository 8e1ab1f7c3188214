"""A FAKE Kubernetes API server for tests: GET/PATCH of one apps/v1 Deployment, plus a fake Service.

Not a Kubernetes: it implements only what the deploy step calls, on 127.0.0.1, with a scripted
rollout (the controller's status updates) and a fake model endpoint standing in for the Service.
"""

from __future__ import annotations

import copy
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STRATEGIC_MERGE = "application/strategic-merge-patch+json"


def strategic_merge(target: Any, patch: Any) -> Any:
    """The subset of a strategic merge patch the deploy step sends.

    Dicts merge key by key, `None` deletes a key, lists of dicts with a `name` merge by name
    (containers, env), and an item with `"$patch": "delete"` removes the item of that name.
    """
    if isinstance(patch, dict) and isinstance(target, dict):
        merged = dict(target)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(target.get(key), value)
        return merged
    if isinstance(patch, list) and isinstance(target, list) and _named(patch) and _named(target):
        merged_list = [dict(item) for item in target]
        for item in patch:
            index = next((i for i, t in enumerate(merged_list) if t["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    merged_list.pop(index)
            elif index is None:
                merged_list.append(item)
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _named(items: list) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def deployment(name: str, namespace: str, model_uri: str | None, replicas: int) -> dict:
    """A rolled-out model-server Deployment as the API server would return it."""
    env = [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlops.svc:5000"}]
    if model_uri is not None:
        env.append({"name": "MODEL_URI", "value": model_uri})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {}},
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "dewpoint-pipeline/serve:0.1.0",
                            "env": env,
                        }
                    ]
                },
            },
        },
        "status": _complete_status(1, replicas),
    }


def _complete_status(generation: int, replicas: int) -> dict:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


class FakeKubernetes:
    """One fake Deployment behind a fake API server, and a fake model Service in front of it.

    Set `never_ready` to MODEL_URIs whose pods never become available (the rollout ends in
    ProgressDeadlineExceeded and the old pods keep serving), `bad_predictions` to MODEL_URIs whose
    pods answer /invocations with a 500, and `forbidden` to verbs (`get`, `patch`) the API refuses.
    """

    def __init__(
        self,
        model_uri: str | None,
        replicas: int = 1,
        name: str = "model-server",
        namespace: str = "mlops",
    ) -> None:
        self.name, self.namespace = name, namespace
        self.deployment = deployment(name, namespace, model_uri, replicas)
        self.serving_uri = model_uri if replicas else None  # what the Service's pods run
        self.never_ready: set[str] = set()
        self.bad_predictions: set[str] = set()
        self.forbidden: set[str] = set()
        self.drop_connections = 0  # the Service hangs up on this many requests first
        self.patches: list[dict] = []
        self._pending: list[dict] = []  # status snapshots the "controller" reports next
        self._lock = threading.Lock()
        self._api = ThreadingHTTPServer(("127.0.0.1", 0), self._api_handler())
        self._service = ThreadingHTTPServer(("127.0.0.1", 0), self._service_handler())
        self.api_url = f"http://127.0.0.1:{self._api.server_port}"
        self.service_url = f"http://127.0.0.1:{self._service.server_port}"
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"

    def __enter__(self) -> FakeKubernetes:
        for server in (self._api, self._service):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._api, self._service):
            server.shutdown()
            server.server_close()

    def model_uri(self) -> str | None:
        """MODEL_URI in the pod template now."""
        container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        return next((e["value"] for e in container["env"] if e["name"] == "MODEL_URI"), None)

    def patched_model_uris(self) -> list[str | None]:
        """MODEL_URI after each PATCH, in order: shows a rollback as a re-patch of the old value."""
        return [p["model_uri"] for p in self.patches]

    def _get(self) -> dict:
        with self._lock:
            if self._pending:
                self.deployment["status"] = self._pending.pop(0)
                if not self._pending:
                    self._finish_rollout()
            return copy.deepcopy(self.deployment)

    def _patch(self, body: dict) -> dict:
        with self._lock:
            before = copy.deepcopy(self.deployment["spec"])
            self.deployment = strategic_merge(self.deployment, body)
            if self.deployment["spec"] != before:
                self.deployment["metadata"]["generation"] += 1
                self._script_rollout()
            self.patches.append({"body": body, "model_uri": self.model_uri()})
            return copy.deepcopy(self.deployment)

    def _script_rollout(self) -> None:
        """Queue what a controller reports: spec not yet observed, surge, then done or stuck."""
        generation = self.deployment["metadata"]["generation"]
        replicas = self.deployment["spec"]["replicas"]
        old = self.deployment["status"]
        surge = {**_complete_status(generation, replicas), "replicas": replicas + 1}
        surge |= {"updatedReplicas": 1 if replicas else 0, "availableReplicas": replicas}
        if self.model_uri() in self.never_ready and replicas:
            stuck = copy.deepcopy(surge)
            stuck["conditions"][1] = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{self.name}-new" has timed out progressing.',
            }
            self._pending = [old, surge, stuck]
        else:
            self._pending = [old, surge, _complete_status(generation, replicas)]

    def _finish_rollout(self) -> None:
        stuck = any(
            c.get("reason") == "ProgressDeadlineExceeded"
            for c in self.deployment["status"]["conditions"]
        )
        if not stuck:
            replicas = self.deployment["spec"]["replicas"]
            self.serving_uri = self.model_uri() if replicas else None

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != fake.path:
                    return self.reply(HTTPStatus.NOT_FOUND, _status(404, "NotFound", self.path))
                if "get" in fake.forbidden:
                    return self.reply(HTTPStatus.FORBIDDEN, fake._forbidden("get"))
                return self.reply(HTTPStatus.OK, fake._get())

            def do_PATCH(self) -> None:
                if self.path.split("?")[0] != fake.path:
                    return self.reply(HTTPStatus.NOT_FOUND, _status(404, "NotFound", self.path))
                if "patch" in fake.forbidden:
                    return self.reply(HTTPStatus.FORBIDDEN, fake._forbidden("patch"))
                if self.headers.get("Content-Type") != STRATEGIC_MERGE:
                    message = f"unsupported patch type {self.headers.get('Content-Type')}"
                    return self.reply(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, _status(415, "", message))
                return self.reply(HTTPStatus.OK, fake._patch(self.read_json()))

        return Handler

    def _service_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(_JsonHandler):
            def do_POST(self) -> None:
                rows = self.read_json()["dataframe_split"]["data"]
                with fake._lock:
                    drop = fake.drop_connections > 0
                    fake.drop_connections -= drop
                if drop:  # hang up without an answer, like a route to a pod that just went away
                    self.close_connection = True
                    return None
                uri = fake.serving_uri
                if self.path != "/invocations" or uri is None:
                    return self.reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no endpoints"})
                if uri in fake.bad_predictions:
                    return self.reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "model failed"})
                version = float(uri.rsplit("/", 1)[1])
                return self.reply(HTTPStatus.OK, {"predictions": [version * r[0] for r in rows]})

        return Handler

    def _forbidden(self, verb: str) -> dict:
        user = "system:serviceaccount:mlops:dewpoint-pipeline"
        message = (
            f'deployments.apps "{self.name}" is forbidden: User "{user}" cannot {verb} resource '
            f'"deployments" in API group "apps" in the namespace "{self.namespace}"'
        )
        return _status(403, "Forbidden", message)


class _JsonHandler(BaseHTTPRequestHandler):
    def read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def reply(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }

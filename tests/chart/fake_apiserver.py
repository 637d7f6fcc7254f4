"""A read-only stand-in for kube-apiserver, enough for `helm template --dry-run=server`.

It answers discovery for the built-in kinds the chart renders, lists no Helm releases, and
serves only the objects it is given (anything else is 404), so the chart's ``lookup`` calls
can be exercised without a cluster.  Every request path is recorded.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESOURCES = {
    "/api/v1": [
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
        ("secrets", "Secret"),
        ("configmaps", "ConfigMap"),
        ("services", "Service"),
        ("serviceaccounts", "ServiceAccount"),
    ],
    "/apis/batch/v1": [("jobs", "Job")],
    "/apis/apps/v1": [("deployments", "Deployment")],
    "/apis/policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "/apis/networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy"), ("ingresses", "Ingress")],
    "/apis/autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
}


class FakeApiServer:
    """Serves ``objects`` (API path -> JSON object) on 127.0.0.1 until ``close``."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server.requests.append(path)
                code, body = server.answer(path)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, folder: Path, namespace: str) -> Path:
        path = folder / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                             "namespace": namespace}}
            ],
            "current-context": "fake",
        }  # fmt: skip
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/version":
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = []
            for group_version in RESOURCES:
                if group_version.startswith("/apis/"):
                    group, version = group_version.removeprefix("/apis/").split("/")
                    entry = {"groupVersion": f"{group}/{version}", "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if path in RESOURCES:
            group_version = path.removeprefix("/apis/").removeprefix("/api/")
            resources = [
                {"name": name, "singularName": "", "namespaced": True, "kind": kind,
                 "verbs": ["get", "list"]}
                for name, kind in RESOURCES[path]
            ]  # fmt: skip
            return 200, {"kind": "APIResourceList", "groupVersion": group_version,
                         "resources": resources}  # fmt: skip
        if path.endswith("/secrets"):  # Helm's release records: none
            return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
        if path in self.objects:
            return 200, self.objects[path]
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404}  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

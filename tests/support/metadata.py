"""A stand-in for GKE's metadata server, as Workload Identity serves it to a pod, on a loopback port.

google-auth finds it through GCE_METADATA_IP (its check that the server is there: ``GET /``,
answered with ``Metadata-Flavor: Google``) and GCE_METADATA_HOST (everything under
``/computeMetadata/v1/``); ``env()`` sets both. Like the real server it refuses requests that
lack the ``Metadata-Flavor: Google`` header (403), and answers what google-auth 2.63.0 asks
for (google/auth/compute_engine/_metadata.py: ``ping``, ``get_project_id``,
``get_service_account_info``, ``get_service_account_token``, ``get_universe_domain``, which
takes a 404 for the default universe). The first ``failures`` token requests get 503, as a
pod's first seconds may see while Workload Identity is set up for it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from support.net import free_port

ROOT = "/computeMetadata/v1/"
TOKEN = "ya29.workload-identity-test"
SERVICE_ACCOUNT = "hello-backups@hello-tests.iam.gserviceaccount.com"


class MetadataServer:
    """``requests`` lists (path, Metadata-Flavor header) of every request, in order."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.requests: list[tuple[str, str | None]] = []
        self.token_requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                flavor = self.headers.get("Metadata-Flavor")
                server.requests.append((self.path, flavor))
                if flavor != "Google":
                    self._answer(403, "text/plain", "Missing Metadata-Flavor: Google header")
                    return
                path = urlsplit(self.path).path
                if path == "/":
                    self._answer(200, "application/text", "ok")
                elif path == ROOT + "project/project-id":
                    self._answer(200, "application/text", "hello-tests")
                elif path == ROOT + "instance/service-accounts/default/":
                    body = {"email": SERVICE_ACCOUNT, "aliases": ["default"], "scopes": []}
                    self._answer(200, "application/json", json.dumps(body))
                elif path == ROOT + "instance/service-accounts/default/token":
                    server.token_requests += 1
                    if server.token_requests <= server.failures:
                        self._answer(503, "text/plain", "not ready")
                        return
                    body = {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}
                    self._answer(200, "application/json", json.dumps(body))
                else:
                    self._answer(404, "text/plain", "not found")

            def _answer(self, status: int, content_type: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        """The environment of a process that is to find this server as google-auth finds GKE's."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def workload_identity_env(home: Path, metadata: MetadataServer | None = None, api_port: int | None = None):
    """The environment of a process that is to find its credentials as a GKE pod does: no
    emulator, no key file, no gcloud login (an empty gcloud folder under ``home``), the metadata
    server ``metadata`` (None: a closed port), and Cloud Storage's API at 127.0.0.1:``api_port``
    (API_ENDPOINT_OVERRIDE, google-cloud-storage's setting for another endpoint; None: a closed
    port, so that nothing leaves the machine)."""
    closed = f"127.0.0.1:{free_port()}"
    return {
        "STORAGE_EMULATOR_HOST": "",
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "API_ENDPOINT_OVERRIDE": f"http://127.0.0.1:{api_port or free_port()}",
        **(metadata.env() if metadata else {"GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed}),
    }

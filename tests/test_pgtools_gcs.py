"""hello_pgtools' Cloud Storage client: how it gets its access token on GKE.

Imported directly (scripts/lib is on pytest's path). The metadata server is played by an HTTP
server on a loopback port (GCE_METADATA_HOST points there), answering as GKE's does: the token
endpoint wants the Metadata-Flavor header and answers {"access_token", "expires_in", ...}.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hello_pgtools.gcs import GcsError, _MetadataServerToken
from support.net import free_port

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"


class MetadataServer:
    """Fails the first ``failures`` token requests with 503, then hands out a token."""

    def __init__(self, failures):
        self.failures = failures
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Metadata-Flavor")))
                if len(server.requests) <= server.failures:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def metadata_server(monkeypatch):
    servers = []

    def start(failures):
        server = MetadataServer(failures)
        servers.append(server)
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        return server

    yield start
    for server in servers:
        server.close()


def test_a_metadata_server_that_fails_at_first_is_asked_again(metadata_server):
    server = metadata_server(failures=2)
    token = _MetadataServerToken(timeout=5, retry_seconds=10)
    assert token() == "ya29.test"
    assert server.requests == [(TOKEN_PATH, "Google")] * 3
    # Cached until shortly before it expires: no fourth request.
    assert token() == "ya29.test" and len(server.requests) == 3


def test_a_metadata_server_that_never_answers_fails_with_what_to_check(monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    token = _MetadataServerToken(timeout=1, retry_seconds=1.2)
    with pytest.raises(GcsError) as raised:
        token()
    message = str(raised.value)
    assert "no access token from the metadata server" in message
    assert "after 2 attempts in 1.2 s" in message
    assert "Workload Identity must bind" in message

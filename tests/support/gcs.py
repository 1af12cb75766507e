"""The GCS emulator (``gcp-storage-emulator``, in memory) on a free loopback port.

``GcsEmulator`` has ``url``, ``env()`` (the environment a child process needs to use it),
``client()`` (a google-cloud-storage client, to check independently what was stored) and
``create_bucket(name)``. The emulator has no IAM: what a real bucket refuses is tested where the
roles grant permissions, not here.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from dataclasses import dataclass

from support.net import free_port, wait_for_port


@dataclass
class GcsEmulator:
    """A running gcp-storage-emulator; ``host`` is ``127.0.0.1:<port>``."""

    port: int
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def env(self, port: int | None = None) -> dict[str, str]:
        """Environment for a child process to use the emulator (or a proxy on ``port``)."""
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port or self.port}"}

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="hello-tests",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_gcs_emulator() -> GcsEmulator:
    """Start an emulator; the caller stops it with ``stop()``."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    emulator = GcsEmulator(port, process)
    try:
        wait_for_port(port)
        with urllib.request.urlopen(f"{emulator.url}/", timeout=5) as answer:
            assert answer.read() == b"OK"
    except BaseException:
        emulator.stop()
        raise
    return emulator

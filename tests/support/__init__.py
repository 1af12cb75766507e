"""What the repository's tests share, one module per concern; tests/conftest.py turns them
into fixtures.

``net``        free loopback ports, waiting for a port, a fault-injecting TCP proxy
``postgres``   throw-away PostgreSQL servers from the host's binaries, databases, templates
``gcs``        the GCS emulator
``service``    the one way to get the service's release binary and start it
``playbooks``  the real ansible-playbook / ansible-inventory, inventory copies, one-play files
``render``     every environment's Kubernetes objects, rendered once per test run
``kube_api``   stand-in regional Kubernetes API servers
``fake_gcloud`` the recording stand-in for gcloud (an executable script)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``scripts/<name>`` with ``args``; ``env`` is added to the current environment.
    Returns the CompletedProcess (text, captured)."""
    return subprocess.run(
        [str(REPO / "scripts" / name), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

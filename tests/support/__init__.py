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
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``scripts/<name>`` with ``args``; ``env`` is added to the current environment.
    Returns the CompletedProcess (text, captured)."""
    return _run([str(REPO / "scripts" / name), *args], env, timeout)


def tool(name: str) -> str:
    """The path of a console entry point of the tools package (tools/pgtools: pg-dump-to-gcs,
    restore-drill, heartbeat), installed beside the Python the tests run with (scripts/bootstrap
    installs it into .venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install tools/pgtools (scripts/bootstrap does)")
    return str(path)


def run_tool(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the installed tool ``name`` (see ``tool``) like ``run_script``."""
    return _run([tool(name), *args], env, timeout)


def _run(argv: list[str], env: dict[str, str] | None, timeout: float):
    return subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

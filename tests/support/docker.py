"""The Docker engine and the images the Docker tests build on.

``docker_images()`` returns HELLO_BUILDER_IMAGE, HELLO_RUNTIME_IMAGE and HELLO_POSTGRES_IMAGE:
from the environment (``scripts/test`` exports them), else as ``scripts/airgap-images
--print-env`` names them. It fails, saying what to run, when the engine does not answer or one
of the images is not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support import run_script

WANTED = ("HELLO_BUILDER_IMAGE", "HELLO_RUNTIME_IMAGE", "HELLO_POSTGRES_IMAGE")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def docker_images() -> dict[str, str]:
    if shutil.which("docker") is None:
        pytest.fail("docker is missing: these tests build and run images")
    if docker("info", check=False, timeout=30).returncode != 0:
        pytest.fail("the Docker engine does not answer (is dockerd running?)")
    names = {name: os.environ[name] for name in WANTED if os.environ.get(name)}
    if len(names) < len(WANTED):
        printed = run_script("airgap-images", "--print-env", timeout=30)
        assert printed.returncode == 0, printed.stderr
        for line in printed.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            names.setdefault(name, value)
    missing = [image for image in names.values() if docker("image", "inspect", image, check=False).returncode != 0]
    if missing:
        pytest.fail(f"images {missing} are not in the Docker engine: run scripts/test images")
    return names

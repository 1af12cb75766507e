"""tools/pgtools is one package with one set of pins: the versions its pyproject.toml names, the
versions the repository's .venv runs the tests with (constraints.txt), and the versions the tools
image installs (requirements.lock, with hashes) are the same."""

from __future__ import annotations

import re
import subprocess
import tomllib

from support import REPO, tool

PACKAGE = REPO / "tools/pgtools"


def pins(text: str) -> dict[str, str]:
    """``name: version`` of every ``name==version`` line, names as PyPI compares them."""
    return {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.MULTILINE)
    }


def project() -> dict:
    return tomllib.loads((PACKAGE / "pyproject.toml").read_text())


def test_the_dependencies_are_exact_pins_of_the_tested_versions():
    declared = project()["project"]["dependencies"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^,;<>=!~ ]*", spec) for spec in declared), declared
    assert {"google-cloud-storage", "google-auth"} <= set(pins("\n".join(declared)))
    tested = pins((REPO / "constraints.txt").read_text())
    assert {name: tested.get(name) for name in pins("\n".join(declared))} == pins("\n".join(declared))


def test_the_image_lock_holds_the_tested_versions_and_the_build_backend():
    lock = (PACKAGE / "requirements.lock").read_text()
    locked = pins(lock)
    tested = pins((REPO / "constraints.txt").read_text())
    (backend,) = project()["build-system"]["requires"]
    backend_name, backend_version = next(iter(pins(backend).items()))
    assert locked.pop(backend_name) == backend_version
    assert pins("\n".join(project()["project"]["dependencies"])).items() <= locked.items()
    differing = {name: (version, tested.get(name)) for name, version in locked.items() if tested.get(name) != version}
    assert differing == {}, f"run scripts/pgtools-deps lock: (lock, constraints.txt) differ for {differing}"
    # Every pinned package carries the hashes pip --require-hashes checks.
    entries = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.MULTILINE)[1:]
    assert len(entries) == len(locked) + 1 and all("--hash=sha256:" in entry for entry in entries)


def test_the_entry_points_are_installed_and_answer():
    for name in project()["project"]["scripts"]:
        done = subprocess.run([tool(name), "--help"], capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.startswith(f"usage: {name} "), done.stderr

"""Runs the repository's real Ansible commands for the tests.

``ansible(tool, *args)`` runs ``.venv/bin/<tool>`` from the repository root (so that the
repository's ansible.cfg applies) and returns the CompletedProcess (text, captured, no colour).
``copy_inventory(env, root)`` copies ``inventories/<env>`` to ``root/<env>`` with its link to the
shared group_vars kept working, so a test can break one variable without touching the real one.
``write_play(path, tasks_or_roles)`` writes a one-play playbook against ``gke_clusters``.

A test that runs Ansible requests the ``ansible`` fixture (directly or through another fixture),
which gives it the ``ansible`` marker; ``ansible()`` refuses to run in a test that did not, so
the marker never lies about what a test runs.
"""

import os
import subprocess
from pathlib import Path

import yaml

from support import REPO

SHARED_LINK = Path("group_vars/all/000_shared")
# A tools image as playbooks/image.yml records it (build/<env>/image.yml), for runs of the
# database playbooks: they refuse to apply the jobs without one (group_vars/all/images.yml).
TOOLS_IMAGE = "europe-docker.pkg.dev/hello-platform/hello/pgtools@sha256:" + "ab" * 32
RECORDED_TOOLS = ("-e", f"hello_tools_image_reference={TOOLS_IMAGE}")
# Set by tests/conftest.py around each test: whether it carries the ``ansible`` marker.
marked = {"current": True}


def ansible(tool, *args, env=None, timeout=None):
    if not marked["current"]:
        raise AssertionError("this test runs Ansible: request the `ansible` fixture so it is marked")
    run_env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        **(env or {}),
    }
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / tool), *map(str, args)],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def copy_inventory(env, root):
    source = REPO / "inventories" / env
    target = Path(root) / env
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    link = target / SHARED_LINK
    link.unlink()
    link.symlink_to(REPO / "group_vars" / "all")
    return target


def edit_vars(path, **changes):
    """Sets (or, with the value ``...``, removes) top-level variables in a YAML vars file."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    for name, value in changes.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_play(path, *, roles=(), tasks=(), hosts="gke_clusters"):
    play = {"name": "Test play", "hosts": hosts, "gather_facts": False}
    if roles:
        play["roles"] = list(roles)
    if tasks:
        play["tasks"] = list(tasks)
    Path(path).write_text(yaml.safe_dump([play], sort_keys=False))
    return Path(path)


def write_role_tasks_play(path, role, tasks_from, name):
    """A play of one task, named ``name``, that includes ``role``'s ``tasks/<tasks_from>.yml``."""
    return write_play(
        path, tasks=[{"name": name, "ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}}]
    )

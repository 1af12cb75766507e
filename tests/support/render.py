"""Every environment's Kubernetes objects, rendered by the real ``playbooks/render.yml``.

The layout is the one ``scripts/render-manifests`` writes: ``<root>/<env>/<host>/<component>/``
(components: ``hello``, ``postgres``, ``backups``, ``drill``, ``kind``).

``shared_render(scratch)`` is the render every policy test reads, made once per test run:
``HELLO_RENDERED_DIR`` when ``scripts/test``'s ansible stage already rendered every environment
into it, otherwise rendered here once, into ``scratch``, under a file lock so that parallel
workers share it. ``render(root, env, *extra_vars)`` renders one environment with changed
inputs, for the tests whose point is a variable's effect.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from filelock import FileLock

from support import REPO
from support.playbooks import ansible

ENVIRONMENTS = tuple(sorted(path.name for path in (REPO / "inventories").iterdir() if path.is_dir()))


def _render_command(root: Path, env: str, *extra_vars: str) -> list[str]:
    args = ["-e", f"hello_k8s_build_dir={root}/{env}/{{{{ inventory_hostname }}}}"]
    for extra in extra_vars:
        args += ["-e", extra]
    return ["ansible-playbook", "-i", f"inventories/{env}", "playbooks/render.yml", *args]


def render(root: Path, env: str, *extra_vars: str) -> Path:
    """Render ``env`` into ``root/<env>/<host>/`` with ``-e`` ``extra_vars``; returns ``root/<env>``."""
    result = ansible(*_render_command(root, env, *extra_vars))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return Path(root) / env


def render_all(root: Path) -> None:
    """Render every environment into ``root``, the environments side by side."""
    with ThreadPoolExecutor(len(ENVIRONMENTS)) as pool:
        for result in pool.map(lambda env: ansible(*_render_command(root, env)), ENVIRONMENTS):
            assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def shared_render(scratch: Path) -> Path:
    """The root of the one render of every environment (see the module docstring)."""
    given = os.environ.get("HELLO_RENDERED_DIR")
    if given:
        root = Path(given)
        missing = [env for env in ENVIRONMENTS if not (root / env).is_dir()]
        assert not missing, f"HELLO_RENDERED_DIR={given} lacks {missing}: run scripts/render-manifests"
        return root
    root = scratch / "rendered"
    with FileLock(str(scratch / "rendered.lock")):
        done = root / ".complete"
        if not done.exists():
            render_all(root)
            done.touch()
    return root


def load_objects(folder: Path) -> list[dict]:
    """Every object of every ``*.yml`` under ``folder``, in file order."""
    objects = []
    for path in sorted(Path(folder).rglob("*.yml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects

"""The architecture diagram and its check, diagrams/render.py --check.

Each case runs the real renderer (the `diagrams` package and Graphviz) on a copy of diagrams/,
changed in one way. The unchanged diagram passing the check is the `diagrams` stage of
scripts/test, so each failure here comes from its one change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

FIX = "run `.venv/bin/python diagrams/render.py`"


@pytest.fixture
def diagrams_copy(tmp_path):
    folder = tmp_path / "diagrams"
    shutil.copytree(REPO / "diagrams", folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def render(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(folder / "render.py"), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_changed_source_fails_the_check_with_a_diff(diagrams_copy):
    source = diagrams_copy / "architecture.py"
    source.write_text(source.read_text().replace('"hello-db-rw"', '"hello-db-rw (renamed)"'))
    result = render(diagrams_copy, "--check")
    assert result.returncode == 1
    assert "architecture.dot does not match architecture.py" in result.stderr
    assert '+\t\t\tsvc_db_rw [label="hello-db-rw (renamed)"' in result.stderr
    assert "architecture.png was rendered from another source" in result.stderr
    assert FIX in result.stderr


def test_rendering_again_brings_everything_back_in_line(diagrams_copy):
    source = diagrams_copy / "architecture.py"
    source.write_text(source.read_text().replace('"hello-db-rw"', '"hello-db-rw (renamed)"'))
    assert render(diagrams_copy).returncode == 0
    assert "hello-db-rw (renamed)" in (diagrams_copy / "architecture.dot").read_text()
    assert render(diagrams_copy, "--check").returncode == 0


def test_rendering_is_deterministic(diagrams_copy):
    assert render(diagrams_copy).returncode == 0
    first = {path.name: path.read_bytes() for path in diagrams_copy.glob("architecture.*")}
    assert render(diagrams_copy).returncode == 0
    second = {path.name: path.read_bytes() for path in diagrams_copy.glob("architecture.*")}
    assert first == second


def test_an_edited_image_fails_the_check(diagrams_copy):
    # Rendered here first: byte for byte comparison needs the renderer that made the image.
    assert render(diagrams_copy).returncode == 0
    png = diagrams_copy / "architecture.png"
    content = bytearray(png.read_bytes())
    content[len(content) // 2] ^= 0xFF
    png.write_bytes(bytes(content))
    result = render(diagrams_copy, "--check")
    assert result.returncode == 1
    assert "architecture.png differs from a fresh rendering" in result.stderr


def test_an_image_without_its_stamp_fails_the_check(diagrams_copy):
    svg = diagrams_copy / "architecture.svg"
    svg.write_text(
        "\n".join(line for line in svg.read_text().splitlines() if not line.startswith("<!-- hello-diagram:"))
    )
    result = render(diagrams_copy, "--check")
    assert result.returncode == 1
    assert "architecture.svg carries no hello-diagram stamp" in result.stderr


def test_the_svg_carries_its_icons_inside(diagrams_copy):
    svg = (diagrams_copy / "architecture.svg").read_text()
    assert svg.count('xlink:href="data:image/png;base64,') == svg.count("<image ")
    assert "/site-packages/" not in svg


def test_the_dot_source_does_not_depend_on_the_machine():
    dot = (REPO / "diagrams" / "architecture.dot").read_text()
    assert "/site-packages/" not in dot and str(REPO) not in dot
    assert 'image="gcp/compute/kubernetes-engine.png"' in dot


@pytest.mark.parametrize(
    "shown",
    [
        "hello-blue",
        "hello-green",
        "primary",
        "standby",
        "replica Cluster hello-db",
        "restore drill",
        "GCS bucket",
        "region A (primary)",
        "region B (disaster recovery)",
        "zone a",
        "zone b",
        "zone c",
        "Workload Identity",
        "Artifact Registry",
    ],
)
def test_the_diagram_shows_each_part_of_the_architecture(shown):
    assert shown in (REPO / "diagrams" / "architecture.dot").read_text()


def test_the_readme_shows_the_diagram_under_its_title():
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1] == "![Architecture](diagrams/architecture.png)"


def test_the_check_does_not_depend_on_where_the_virtualenv_is_reached(diagrams_copy, tmp_path):
    # A .venv that is a symbolic link to another one (as in a second checkout) names the icons
    # by the link's path; the committed source must still match.
    linked = tmp_path / "linked-venv"
    linked.symlink_to(REPO / ".venv")
    result = subprocess.run(
        [str(linked / "bin" / "python"), str(diagrams_copy / "render.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

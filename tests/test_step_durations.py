"""The step durations every role prints (filter_plugins/hello_steps.py): one line per step, the
same shape in a release (roles/hello_app) and a switchover or failover (roles/postgres)."""

import importlib.util

import pytest

from support import REPO

spec = importlib.util.spec_from_file_location("hello_steps", REPO / "filter_plugins/hello_steps.py")
steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(steps)


@pytest.mark.parametrize(
    ("started", "ended", "seconds"),
    [(100.0, 148.24, 48.2), ("100.0", 100.46, 0.5), (1_700_000_000.123456, 1_700_000_000.123456, 0.0)],
)
def test_a_duration_is_the_time_since_the_start_in_tenths(started, ended, seconds):
    """The start comes from a fact, a string once Ansible templated it."""
    duration = steps.step_duration(started, "Roll green", "europe-west1", ended=ended)
    assert duration == {"step": "Roll green", "region": "europe-west1", "seconds": seconds}


def test_a_duration_without_an_end_runs_until_now():
    assert 0 <= steps.step_duration(steps.time.time(), "Render")["seconds"] < 5


@pytest.mark.parametrize(
    ("duration", "line"),
    [
        ({"step": "Render the objects", "region": None, "seconds": 0.4}, "Render the objects: 0.4 s"),
        ({"step": "Promote", "region": "europe-west4", "seconds": 12}, "Promote (europe-west4): 12.0 s"),
    ],
)
def test_the_line_names_the_step_its_region_and_its_seconds(duration, line):
    assert steps.step_line(duration) == line

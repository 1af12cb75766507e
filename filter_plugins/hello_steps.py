"""Step durations, measured and printed one way by every role.

A long run (a release of roles/hello_app, a switchover or failover of roles/postgres) prints how
long each of its steps took, one line per step: ``Roll green to 3 Ready pod(s): 48.2 s``, or
with the region ``Promote the replica cluster (europe-west4): 12.0 s``. A step notes when it
starts (``now(utc=true).timestamp()``) and, once over, turns that into a duration:

    __x_started | hello_step_duration('Roll green', gke_region) | hello_step_line
"""

from __future__ import annotations

import time


def step_duration(started, step, region=None, ended=None):
    """``{step, region, seconds}`` of a step that started at ``started`` and ended at ``ended``
    (seconds since the epoch; now when not given), the seconds rounded to tenths."""
    finished = time.time() if ended is None else float(ended)
    return {"step": step, "region": region, "seconds": round(finished - float(started), 1)}


def step_line(duration):
    """The line a step prints: its name, its region when it has one, and its seconds."""
    region = f" ({duration['region']})" if duration.get("region") else ""
    return f"{duration['step']}{region}: {float(duration['seconds']):.1f} s"


class FilterModule:
    """The filters of step durations."""

    def filters(self):
        return {
            "hello_step_duration": step_duration,
            "hello_step_line": step_line,
        }

"""Where the pinned CRD schemas are (CloudNativePG, the Barman Cloud plugin, the Gateway API).

They are not in the repository: ``HELLO_CRD_DIR`` names their folder (``.ci/run`` sets it when a
copy sits beside the checkout; the users' CI downloads them from the pinned releases). One rule
when it is missing: in CI (``CI`` set to true) a test that needs them fails, since a CI run that
did not check the custom resources must not pass; on a developer's machine it is skipped, with
the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def crd_dir() -> Path:
    named = os.environ.get("HELLO_CRD_DIR")
    if named and Path(named).is_dir():
        return Path(named)
    reason = (
        f"HELLO_CRD_DIR={named} is not a folder" if named else "HELLO_CRD_DIR is not set"
    ) + ": set it to the folder of the pinned CRD files to validate custom resources"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)

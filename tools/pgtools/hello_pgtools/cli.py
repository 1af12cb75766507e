"""Command-line plumbing shared by the scripts: flags that default to environment variables,
and one way to report a failure (a single line on stderr, exit status 1)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .errors import StepFailed

EXIT_FAILED = 1


class EnvDefaults:
    """Adds flags whose default comes from an environment variable, and checks them."""

    def add(
        self,
        parser: argparse.ArgumentParser,
        flag: str,
        env: str,
        help: str,
        default: str | None = None,
        required: bool = False,
        kind: Callable[[str], object] = str,
    ) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        # An empty variable counts as unset, as in a Kubernetes env list.
        raw = os.environ.get(env) or default
        value = None
        if raw is not None:
            try:
                value = kind(raw)
            except ValueError:
                parser.error(f"{env}={raw!r} is not valid for {flag}: expected {_describe(kind)}")
        suffix = f" (env {env}" + (f", default {default}" if default is not None else "") + ")"
        parser.add_argument(flag, dest=dest, default=value, type=kind, help=help + suffix)
        if required:
            # Kept as a default of this (sub)parser, so only the chosen subcommand's
            # required flags are checked.
            wanted = parser.get_default("_env_required") or []
            parser.set_defaults(_env_required=[*wanted, (dest, flag, env)])

    @staticmethod
    def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        for dest, flag, env in getattr(args, "_env_required", None) or []:
            if getattr(args, dest) in (None, ""):
                parser.error(f"{flag} is required: pass it or set {env}")


def _describe(kind: Callable[[str], object]) -> str:
    return getattr(kind, "__doc__", None) or getattr(kind, "__name__", "a value")


def non_negative_int(text: str) -> int:
    """a whole number >= 0"""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive_int(text: str) -> int:
    """a whole number >= 1"""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    """a number of seconds > 0"""
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def run(prog: str, main: Callable[[], int]) -> None:
    """Run ``main``; a failed step becomes one line on stderr and exit status 1."""
    try:
        status = main()
    except StepFailed as failure:
        print(f"{prog}: {failure}", file=sys.stderr)
        status = EXIT_FAILED
    except OSError as error:
        # A missing client binary, an unwritable --output or --workdir, a full disk.
        print(f"{prog}: {error}", file=sys.stderr)
        status = EXIT_FAILED
    sys.exit(status)

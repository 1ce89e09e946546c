"""Shared test helpers: the disposable-root guard, dry run, output capture.

Tests that install packages, add users or edit /etc run only inside the
throwaway Debian root that run-tests prepares, marked by MARKER. Elsewhere
they skip, or fail under CI=true so a CI run cannot pass without them.
"""

from __future__ import annotations

import contextlib
import io
import os
import unittest
from collections.abc import Callable, Iterator
from typing import TypeVar

MARKER = "/etc/pydebianadmin-test-root"

T = TypeVar("T")


def require_disposable_root(case: unittest.TestCase) -> None:
    """Skip (or under CI=true fail) unless running as root in run-tests' root."""
    if os.geteuid() == 0 and os.path.exists(MARKER):
        return
    reason = f"needs root inside the disposable Debian root ({MARKER}); use run-tests"
    if os.environ.get("CI") == "true":
        case.fail(reason)
    raise unittest.SkipTest(reason)


class SystemTestCase(unittest.TestCase):
    """A test that changes the system it runs on; see require_disposable_root."""

    def setUp(self) -> None:
        require_disposable_root(self)


def call(helper: Callable[..., T], *args: object, **kwargs: object) -> tuple[T, str]:
    """Call a helper and return its result and what it printed."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = helper(*args, **kwargs)
    return result, output.getvalue()


@contextlib.contextmanager
def dry_run() -> Iterator[None]:
    os.environ["PYDEBIANADMIN_DRY_RUN"] = "1"
    try:
        yield
    finally:
        del os.environ["PYDEBIANADMIN_DRY_RUN"]

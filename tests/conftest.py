"""Root conftest: server fixtures, the domain factories, and CI's no-skip rule."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures.sftp", "tests.fixtures.ftp", "tests.fixtures.domain", "tests.fixtures.pipeline",
                  "tests.fixtures.dropzones"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With CI=true a skip is a failure: a missing server or package must not pass unseen."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true (skips hide missing dependencies): {reason}"

"""Root conftest: server fixtures, the domain factories, and CI's no-skip rule."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.test import override_settings

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


@pytest.fixture(autouse=True)
def media_in_tmp(tmp_path) -> Iterator[None]:
    """Django storage (MEDIA_ROOT) is the test's own directory, not the developer's var/media.

    The test's directory is also the local dropzone jail (LOCAL_DROPZONE_ROOT): a local
    connection's paths (``/dropzone/inbound``) resolve inside it.
    """
    # override_settings, not pytest-django's `settings`: some modules name a fixture `settings` too.
    with override_settings(MEDIA_ROOT=str(tmp_path / "media"), LOCAL_DROPZONE_ROOT=tmp_path):
        yield

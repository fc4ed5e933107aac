"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, an operator account, screenshots.

No browser is ever downloaded: Playwright only drives ``/usr/bin/chromium`` (Debian's package, which
``.ci/run`` installs like openssh-server). Without it the tests skip with the reason; under ``CI=true`` a
skip is a failure (tests/conftest.py), so CI cannot pass without having run them.

Playwright's sync API keeps an asyncio event loop in this thread while it runs, and Django refuses ORM calls
from a thread with a running loop (SynchronousOnlyOperation). ``DJANGO_ALLOW_ASYNC_UNSAFE`` is therefore set
while a browser module runs, and only then: the rest of the suite keeps Django's check.

Screenshots are full-page PNGs under ``var/test-artifacts/browser/<test>/`` (listed at the end of the run);
a failing test also leaves ``FAILED.png`` and a Playwright trace (``trace.zip``) there.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, sync_playwright

# Debian's package (`apt-get install chromium`); BROWSER_TESTS_CHROMIUM names another Chromium build already installed.
CHROMIUM = Path(os.environ.get("BROWSER_TESTS_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts" / "browser"
# Nothing but the live server on 127.0.0.1: no updates, sync, metrics or first-run pages; no sandbox (CI is root).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
    "--no-first-run", "--no-default-browser-check", "--no-proxy-server", "--metrics-recording-only",
]
VIEWPORT = {"width": 1366, "height": 900}  # the laptop width the admin's list pages are laid out for
OPERATOR_PASSWORD = "Dropzone-operator-7413"

_REPORTS = pytest.StashKey[dict]()
_SAVED: list[Path] = []  # every artifact written in this session, for the summary


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item, so the page fixture knows whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _SAVED:
        terminalreporter.write_sep("-", f"browser test artifacts ({ARTIFACTS.relative_to(settings.BASE_DIR)}/)")
        for path in _SAVED:
            terminalreporter.write_line(str(path.relative_to(settings.BASE_DIR)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium per test module (starting one takes a second or two)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (the browser tests drive Debian's "
                    "Chromium; they never download a browser)")
    with pytest.MonkeyPatch.context() as env, tempfile.TemporaryDirectory(prefix="no-browsers-") as empty:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # Belt and braces: should anything ask Playwright for a browser of its own, it finds none and fetches none.
        env.setenv("PLAYWRIGHT_BROWSERS_PATH", empty)
        env.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact directory, emptied first (an old screenshot must not pass for a new one)."""
    directory = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:100]
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def js_errors() -> list[str]:
    """Uncaught exceptions, console errors and HTTP errors (but the browser's own /favicon.ico, which the admin
    does not have) of every page the test opened: a test asserts it stays empty."""
    return []


@pytest.fixture
def page(browser: Browser, live_server, artifacts: Path, js_errors: list[str],
         request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the live server; relative URLs go to it."""
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(20_000)  # the SFTP steps run inside the request (synchronous tasks)
    context.tracing.start(screenshots=True, snapshots=True)
    tab = context.new_page()
    tab.on("pageerror", lambda error: js_errors.append(f"{tab.url}: {error}"))
    tab.on("console", lambda msg: js_errors.append(f"{tab.url}: {msg.text}") if msg.type == "error"
           and not msg.text.startswith("Failed to load resource") else None)  # those are in the responses
    tab.on("response", lambda response: js_errors.append(f"HTTP {response.status} {response.url}")
           if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    try:
        yield tab
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        if any(r.failed for r in reports.values()):
            for path, save in ((artifacts / "FAILED.png", lambda p: tab.screenshot(path=p, full_page=True)),
                               (artifacts / "trace.zip", lambda p: context.tracing.stop(path=p))):
                try:
                    save(path)
                    _SAVED.append(path)
                except Exception as err:  # the page may be gone; the test's own failure matters more
                    print(f"could not save {path}: {err}")
        else:
            context.tracing.stop()
        context.close()


@pytest.fixture
def screenshot(page: Page, artifacts: Path) -> Callable[[str], Path]:
    """``screenshot("login")`` saves the whole page as ``NN-login.png`` in this test's artifact directory."""
    taken: list[Path] = []

    def take(name: str) -> Path:
        path = artifacts / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=path, full_page=True)
        taken.append(path)
        _SAVED.append(path)
        return path

    return take


@dataclass(frozen=True)
class Operator:
    username: str
    password: str = field(repr=False)


@pytest.fixture
def operator(transactional_db: None) -> Operator:
    """A superuser with a known password, to log in through the real login form."""
    user = get_user_model().objects.create_superuser("operator", "operator@example.com", OPERATOR_PASSWORD)
    return Operator(user.get_username(), OPERATOR_PASSWORD)

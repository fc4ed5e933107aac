"""Issue 11's test plan in a real browser: what an operator does with an SFTP dropzone, from login to alarm.

One flow, because a browser start costs seconds: log in through the login form; add an SFTP connection to the
tests' OpenSSH sshd with the add form (which shows only the chosen transport's fields); generate a key pair and
authorize its public line on the server; test the connection, compare and pin the host key, test again; push a
draft from its page, let the simulated ERP answer, "Poll now", and read CONFIRMED, the ERP's number and the
story on the draft page; download the delivered file; then the server's key changes, and the home page's
health panel shows the connection failing with that reason.

Tasks run inline (``sync_tasks``): a button that queues a delivery or a poll has done it when the page returns.
Assertions are on what the operator sees: texts, badges and the CSS classes the templates give them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Locator, Page, expect

from connectors.crypto import reveal
from connectors.models import ERPConnection, ERPExport
from connectors.simulator import erp_order_number
from connectors.transports.ssh_keys import fingerprint, parse_public_key
from orderflow.models import DraftOrder, Organization
from tests.fixtures.dropzones import repoint
from tests.servers.sshd import SSHDServer

from .conftest import Operator

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sync_tasks")]

CONNECTION_NAME = "ACME ERP (SFTP)"


def host_key_fingerprint(line: str) -> str:
    return fingerprint(parse_public_key(line)[1])


def field_row(page: Page, name: str) -> Locator:
    return page.locator(f".form-row.field-{name}")


def fieldset(page: Page, heading: str) -> Locator:
    return page.locator("fieldset", has=page.get_by_role("heading", name=heading, exact=True))


def messages(page: Page) -> Locator:
    return page.locator("ul.messagelist")


def log_in(page: Page, operator: Operator, screenshot: Callable[[str], Path]) -> None:
    page.goto("/admin/")
    expect(page).to_have_url("/admin/login/?next=/admin/")  # not logged in: the login form
    screenshot("login")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", operator.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url("/admin/")
    expect(page.locator("#user-tools")).to_contain_text(f"Welcome, {operator.username}")


def add_sftp_connection(page: Page, org: Organization, sshd: SSHDServer, base: Path,
                        screenshot: Callable[[str], Path]) -> ERPConnection:
    page.goto("/admin/connectors/erpconnection/add/")
    page.select_option("#id_organization", label=org.name)
    page.fill("#id_name", CONNECTION_NAME)

    # A local directory has no server: the SSH/FTP-only fields and the whole Credentials section go away.
    page.select_option("#id_transport", "local")
    for name in ("port", "username", "host_key", "password", "private_key", "private_key_passphrase",
                 "upload_channels"):
        expect(field_row(page, name), f"{name} with transport local").to_be_hidden()
    expect(fieldset(page, "Credentials (write-only)")).to_be_hidden()
    expect(page.locator('label[for="id_host"]')).to_contain_text("Sub-directory")
    # FTP: a password but no SSH key; SFTP: everything, with SSH's words.
    page.select_option("#id_transport", "ftp")
    expect(field_row(page, "password")).to_be_visible()
    expect(field_row(page, "private_key")).to_be_hidden()
    expect(field_row(page, "host_key")).to_be_hidden()
    page.select_option("#id_transport", "sftp")
    for name in ("port", "username", "host_key", "password", "private_key", "private_key_passphrase",
                 "upload_channels"):
        expect(field_row(page, name), f"{name} with transport sftp").to_be_visible()
    expect(fieldset(page, "Credentials (write-only)")).to_be_visible()
    expect(page.locator('label[for="id_host"]')).to_have_text("Host:")
    expect(page.locator('label[for="id_host_key"]')).to_have_text("Host key (pinned):")

    page.fill("#id_host", sshd.host)
    page.fill("#id_port", str(sshd.port))
    page.fill("#id_username", sshd.key_user.name)
    page.fill("#id_export_path", str(base / "inbound"))
    page.fill("#id_ack_path", str(base / "outbound"))
    page.fill("#id_min_ack_age_seconds", "0")  # the simulated ERP's answer is read at once
    page.check("#id_is_active")
    screenshot("connection-add-form")
    page.get_by_role("button", name="Save and continue editing").click()

    expect(messages(page)).to_contain_text("Saved. Test the connection to check that it works.")
    expect(page.locator(".errornote")).to_have_count(0)
    conn = ERPConnection.objects.get(organization=org, name=CONNECTION_NAME)
    expect(page).to_have_url(f"/admin/connectors/erpconnection/{conn.pk}/change/")
    assert (conn.transport, conn.host, conn.port, conn.is_active) == ("sftp", "127.0.0.1", sshd.port, True)
    # Still on SFTP after the reload: the script applied the saved transport.
    expect(field_row(page, "private_key")).to_be_visible()
    return conn


def generate_and_authorize_key(page: Page, conn: ERPConnection, sshd: SSHDServer,
                               screenshot: Callable[[str], Path]) -> str:
    expect(field_row(page, "private_key")).to_contain_text("Nothing stored")
    page.locator("button.of-generate-key").click()
    expect(messages(page)).to_contain_text("New key pair generated")
    line = page.locator("code.of-public-key").inner_text().strip()
    assert line.startswith("ssh-ed25519 ") and line.endswith(f" orderflow-acme-{conn.pk}"), line
    # The page now says a private key is stored, and shows the public half (never the private one).
    expect(field_row(page, "private_key")).to_contain_text("A value is stored")
    expect(field_row(page, "client_public_key")).to_contain_text(line)
    private = reveal(ERPConnection.objects.get(pk=conn.pk).private_key)
    html = page.content()
    assert private and not any(body in html for body in private.splitlines()[1:-1])
    screenshot("connection-key-generated")
    sshd.authorize(line)  # what the ERP's admin does with the line we sent them
    return line


def run_test_and_pin(page: Page, conn: ERPConnection, sshd: SSHDServer,
                     screenshot: Callable[[str], Path]) -> None:
    page.locator(".object-tools a.of-test-link").click()
    expect(page).to_have_url(f"/admin/connectors/erpconnection/{conn.pk}/test/")
    expect(page.locator("#content-main")).to_contain_text("This connection has not been tested yet.")
    page.get_by_role("button", name="Run the test").click()

    # It stops at the server's identity and offers the key, with the fingerprint to compare.
    result = page.locator("p.of-test-result")
    expect(result).to_contain_class("of-failed")
    expect(result).to_contain_text("no host key is pinned")
    expect(page.get_by_role("heading", name="No host key is pinned yet")).to_be_visible()
    expected = host_key_fingerprint(sshd.host_keys["ed25519"])
    expect(page.locator("#of-presented-fingerprint")).to_have_text(expected)
    expect(page.locator("#of-steps tr.of-step-failed")).to_contain_text(["Host key"])
    screenshot("test-no-key-pinned")

    page.get_by_role("button", name="Trust and pin this key").click()
    expect(messages(page)).to_contain_text("Key pinned. Run the test again to check the connection with it.")
    page.get_by_role("button", name="Run the test again").click()
    expect(result).to_contain_class("of-ok")
    expect(result).to_contain_text("Connection test passed")
    expect(page.locator("#of-steps tr.of-step-failed")).to_have_count(0)
    expect(page.locator("#of-steps tbody tr").first).to_contain_text("TCP connect")
    expect(page.locator("#of-steps")).to_contain_text(expected)  # the Host key step names the pinned key
    expect(page.get_by_role("button", name="Trust and pin this key")).to_have_count(0)
    screenshot("test-passed")
    conn.refresh_from_db()
    assert conn.host_key == sshd.host_keys["ed25519"]


def push_answer_poll(page: Page, conn: ERPConnection, draft: DraftOrder,
                     screenshot: Callable[[str], Path]) -> ERPExport:
    draft_url = f"/admin/orderflow/draftorder/{draft.pk}/change/"
    page.goto(draft_url)
    expect(page.locator(".field-status_display .of-status-new")).to_have_text("New")
    page.locator("button.of-push-button").click()
    expect(messages(page)).to_contain_text("1 draft(s) approved and queued for the ERP.")
    # Delivered inside that request (tasks run inline): the list says so.
    row = page.locator("#result_list tbody tr", has_text=draft.order_number)
    expect(row.locator(".of-status-pushed")).to_have_text("Pushed to ERP")
    export = ERPExport.objects.get(draft=draft)
    assert export.status == ERPExport.Status.SENT, (export.status, export.last_error)

    out = StringIO()  # the ERP picks the file up and answers it
    call_command("simulate_erp", f"--connection={conn.pk}", "--once", stdout=out)
    assert "1 accepted" in out.getvalue(), out.getvalue()

    page.goto(f"/admin/connectors/erpconnection/{conn.pk}/change/")
    page.locator("button.of-poll-now").click()
    expect(messages(page)).to_contain_text(f"A poll of {conn} is queued")
    expect(field_row(page, "last_poll_ok").get_by_role("img", name="True")).to_be_visible()  # the admin's icon

    page.goto(draft_url)
    number = erp_order_number(str(export.pk))
    expect(page.locator(".field-status_display .of-status-confirmed")).to_have_text("Confirmed by ERP")
    expect(field_row(page, "erp_order_id")).to_contain_text(number)
    expect(page.locator(".of-status-acked")).to_have_text("Confirmed by ERP")  # the export, in the inline
    expect(page.locator("button.of-push-button")).to_have_count(0)  # what the ERP has cannot be pushed again
    # The story: who pushed, the delivery, the ERP's answer with its number.
    story = page.locator("table.of-timeline tbody tr")
    expect(story.locator("td:nth-child(3)")).to_have_text(["export created", "delivered", "ack accepted"])
    expect(story.locator("td:nth-child(2)")).to_have_text(["operator", "orderflow", "the ERP"])
    expect(story.nth(0)).to_contain_text(f"operator pushed {draft.order_number}")
    expect(story.nth(1)).to_contain_text(f"Delivered {export.filename}")
    expect(story.nth(2)).to_contain_text(f"accepted by the ERP as {number}")
    screenshot("draft-confirmed")
    return export


def download_payload(page: Page, export: ERPExport, draft: DraftOrder, screenshot: Callable[[str], Path]) -> None:
    page.get_by_role("link", name=str(export.pk)[:8]).click()  # the export, from the draft's inline
    expect(page).to_have_url(f"/admin/connectors/erpexport/{export.pk}/change/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the file").click()
    download = info.value
    data = Path(download.path()).read_bytes()
    assert download.suggested_filename == export.filename
    document = json.loads(data)
    assert document["export_id"] == str(export.pk)
    assert document["order"]["order_number"] == draft.order_number
    assert [line["sku"] for line in document["order"]["lines"]] == ["BOLT-M8X41", "BOLT-M8X42"]
    assert data.endswith(b"\n") and not data.startswith(b"\xef\xbb\xbf")
    expect(field_row(page, "payload_sha256")).to_contain_text(hashlib.sha256(data).hexdigest())
    expect(field_row(page, "payload_size")).to_contain_text(str(len(data)))
    screenshot("export")


def host_key_changes(page: Page, conn: ERPConnection, old: SSHDServer, new: SSHDServer,
                     screenshot: Callable[[str], Path]) -> None:
    page.goto("/admin/")
    health = page.locator("#of-health tr.of-health-row", has_text=CONNECTION_NAME)
    expect(health).to_contain_class("of-health-healthy")

    # The server is reinstalled: the connection now reaches a server with other host keys (the secrets are
    # re-stamped for the new port, as an admin typing them again would, so only the key is different).
    repoint(conn, port=new.port)
    page.goto(f"/admin/connectors/erpconnection/{conn.pk}/change/")
    page.locator("button.of-poll-now").click()
    expect(field_row(page, "last_poll_ok").get_by_role("img", name="False")).to_be_visible()
    expect(field_row(page, "last_poll_message")).to_contain_text("CHANGED")

    page.goto("/admin/")
    expect(health).to_contain_class("of-health-failing")
    expect(health.locator(".of-health-status")).to_have_text("failing")
    expect(health.locator(".of-health-reason")).to_contain_text("the server's key CHANGED")
    screenshot("home-failing")

    # The connection list says it too, and fits a 1366 px screen: no column off to the right.
    page.goto("/admin/connectors/erpconnection/")
    expect(page.locator("#result_list .of-state-failing")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    screenshot("connection-list")
    page.goto("/admin/")

    # The test page says the same, with both fingerprints to compare.
    health.get_by_role("link", name=CONNECTION_NAME).click()
    page.locator(".object-tools a.of-test-link").click()
    page.get_by_role("button", name="Run the test again").click()
    expect(page.get_by_role("heading", name="The server's key has CHANGED")).to_be_visible()
    offered = page.locator(".module", has=page.get_by_role("heading", name="The server's key has CHANGED"))
    expect(offered).to_contain_text(host_key_fingerprint(old.host_keys["ed25519"]))
    expect(page.locator("#of-presented-fingerprint")).to_have_text(host_key_fingerprint(new.host_keys["ed25519"]))
    screenshot("test-key-changed")


def test_operator_connects_sftp_pushes_a_draft_and_sees_a_changed_host_key(
    page: Page, operator: Operator, org: Organization, make_draft: Callable[..., DraftOrder], sshd_server: SSHDServer,
    sshd_factory: Callable[[], SSHDServer], sftp_dir: Path, screenshot: Callable[[str], Path],
    js_errors: list[str],
) -> None:
    for sub in ("inbound", "outbound"):
        (sftp_dir / sub).mkdir()
    log_in(page, operator, screenshot)
    conn = add_sftp_connection(page, org, sshd_server, sftp_dir, screenshot)
    generate_and_authorize_key(page, conn, sshd_server, screenshot)
    run_test_and_pin(page, conn, sshd_server, screenshot)
    draft = make_draft(lines=2)
    export = push_answer_poll(page, conn, draft, screenshot)
    download_payload(page, export, draft, screenshot)
    host_key_changes(page, conn, sshd_server, sshd_factory(), screenshot)
    assert js_errors == []

"""Issue 18, finding 1: each organization owns its ground.

A staff member of organization A saved her own local connection with ``host`` empty (or any directory of
LOCAL_DROPZONE_ROOT) and paths into organization B's directories: her polls moved B's acks away, her drafts
landed in B's ERP inbox, B's file names reached her alert mails.  The same overlap was possible between two
organizations' remote connections to one server and login.  Here: two organizations, a non-superuser staff
member of one, real local dropzones under the test's LOCAL_DROPZONE_ROOT, and the tests' real sshd.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from connectors.models import ERPConnection, ERPExport
from connectors.services.tenancy import clashes, local_root_of
from connectors.work import jobs
from orderflow.models import Organization
from tests.fixtures.dropzones import connection_from
from tests.security.test_lure import form


@pytest.fixture
def globex(db: None) -> Organization:
    return Organization.objects.create(slug="globex", name="Globex Ltd")


@pytest.fixture
def alice(org: Organization) -> Client:
    """A staff member of ACME (org) who may add and change connections: no superuser."""
    user = User.objects.create_user("alice", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_erpconnection", "change_erpconnection", "add_erpconnection", "view_organization",
        "change_organization", "run_now"]))
    org.members.add(user)
    client = Client()
    client.force_login(user)
    return client


def test_each_organization_has_its_own_directory_of_the_root(org: Organization, globex: Organization) -> None:
    root = Path(settings.LOCAL_DROPZONE_ROOT)
    assert local_root_of(org) == root / "acme" and local_root_of(globex) == root / "globex"


def test_a_local_connection_cannot_reach_another_organizations_directory(
        org: Organization, globex: Organization, alice: Client, make_draft) -> None:
    """Globex's ERP answers in globex/outbound; ACME's staff points her own connection at it every way she can."""
    globex_out = local_root_of(globex) / "outbound"
    globex_out.mkdir(parents=True)
    ack = globex_out / "ack_globex-order.json"
    ack.write_text(json.dumps({"export_id": "0" * 32, "status": "accepted", "erp_order_number": "G-1"}))
    attempts = [{"host": "", "ack_path": "/globex/outbound"}, {"host": "../globex", "ack_path": "/outbound"},
                {"host": "globex", "ack_path": "/outbound"}, {"host": "", "ack_path": "/../globex/outbound"},
                {"host": "/", "ack_path": str(globex_out)}]
    for n, fields in enumerate(attempts):
        data = {**form(ERPConnection(organization=org, name=f"mine {n}", transport="local", host="",
                                     export_path="/inbound", ack_path="/outbound")),
                "port": "", "username": "", "host_key": "", "is_active": "", **fields}
        alice.post(reverse("admin:connectors_erpconnection_add"), data)
    for conn in ERPConnection.objects.filter(organization=org):
        jobs.poll(conn.pk, force=True)
    assert ack.exists()  # never moved away by ACME's polls
    assert not any((local_root_of(org)).rglob("ack_globex-order.json"))


def test_the_slug_that_names_the_directory_is_the_operators(org: Organization, alice: Client) -> None:
    url = reverse("admin:orderflow_organization_change", args=[org.pk])
    html = alice.get(url).content.decode()
    assert 'name="slug"' not in html  # read-only for staff: the operator decides where the ground is
    alice.post(url, {"name": org.name, "slug": "globex", "alert_emails": ""})
    assert Organization.objects.get(pk=org.pk).slug == "acme"


# -- remote connections: one server, one login, two organizations -----------------------------------------


@pytest.fixture
def acme_sftp(org: Organization, sftp_settings, sftp_dir: Path) -> ERPConnection:
    for sub in ("inbound", "outbound"):
        (sftp_dir / sub).mkdir()
    return connection_from(sftp_settings(), org, export_path=f"{sftp_dir}/inbound", ack_path=f"{sftp_dir}/outbound")


@pytest.mark.parametrize(("export_path", "ack_path"), [
    ("{base}/inbound", "{base}/mine"),  # the same inbox
    ("{base}/theirs", "{base}/outbound"),  # the same answers
    ("{base}", "{base}/mine"),  # a parent of theirs
    ("{base}/outbound/sub", "{base}/mine"),  # inside theirs
    ("{base}//inbound/", "{base}/mine"),  # the same, spelt otherwise
    ("{base}/theirs", "{base}/./outbound/."),
])
def test_two_organizations_never_share_a_directory_on_one_server_and_login(
        acme_sftp: ERPConnection, globex: Organization, sftp_settings, export_path: str, ack_path: str) -> None:
    base = Path(acme_sftp.export_path).parent
    values = {"base": str(base)}
    other = ERPConnection(organization=globex, name="G", transport="sftp", host=acme_sftp.host.upper(),
                          port=acme_sftp.port, username=acme_sftp.username,
                          export_path=export_path.format(**values), ack_path=ack_path.format(**values))
    with pytest.raises(ValidationError) as info:
        other.full_clean()
    assert "another organization" in str(info.value).lower()
    assert "acme" not in str(info.value).lower()  # never who: that is the other organization's business


def test_a_different_login_or_server_is_another_ground(acme_sftp: ERPConnection, globex: Organization) -> None:
    for fields in ({"username": "someone-else"}, {"host": "erp.example.com"}, {"port": 2222}):
        values = {"host": acme_sftp.host, "port": acme_sftp.port, "username": acme_sftp.username, **fields}
        ERPConnection(organization=globex, name="G", transport="sftp", export_path=acme_sftp.export_path,
                      ack_path=acme_sftp.ack_path, **values).full_clean(exclude=["password"])


def test_a_clash_made_behind_the_forms_back_is_refused_at_run_time(
        acme_sftp: ERPConnection, globex: Organization, make_draft) -> None:
    """Rows written without their checks (a shell, a bulk update): the job refuses to run, on both sides."""
    theirs = ERPConnection.objects.create(organization=globex, name="G", transport="sftp", host=acme_sftp.host,
                                          port=acme_sftp.port, username=acme_sftp.username, is_active=True,
                                          export_path="/elsewhere", ack_path=acme_sftp.ack_path)
    assert clashes(theirs) == [acme_sftp.pk] and clashes(acme_sftp) == [theirs.pk]
    report = jobs.poll(theirs.pk, force=True)
    assert report is not None and "another organization" in report.error
    ERPExport.objects.create(draft=make_draft(), connection=acme_sftp, next_attempt_at=None)
    jobs.deliver(acme_sftp.pk)
    assert "another organization" in ERPExport.objects.get().last_error


# -- property: whatever the paths, no accepted pair of connections of two organizations overlaps -----------

SEGMENT = st.sampled_from(["a", "b", "in", "out", "..", ".", "", "globex", "acme", "A"])
PATH = st.lists(SEGMENT, max_size=4).map(lambda parts: "/".join(parts)).flatmap(
    lambda p: st.sampled_from([p, "/" + p, "./" + p]))


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mine=st.tuples(PATH, PATH, PATH), theirs=st.tuples(PATH, PATH, PATH), kind=st.sampled_from(["local", "sftp"]))
def test_no_overlap_between_two_organizations_is_ever_accepted(
        org: Organization, globex: Organization, mine: tuple[str, str, str], theirs: tuple[str, str, str],
        kind: str) -> None:
    ERPConnection.objects.all().delete()
    made = []
    for owner, (host_or_dir, export, ack) in ((org, mine), (globex, theirs)):
        fields = ({"host": host_or_dir.strip("/.") and host_or_dir} if kind == "local" else
                  {"host": "erp.example.com", "username": "shared", "port": 22})
        conn = ERPConnection(organization=owner, name="ERP", transport=kind, export_path=export or "/x",
                             ack_path=ack or "/y", **fields)
        try:
            conn.full_clean(exclude=["password", "private_key", "private_key_passphrase"])
        except ValidationError:
            continue
        conn.save()
        made.append(conn)
    if len(made) < 2:
        return
    if kind == "local":  # where each directory really is, on disk, after the jail resolved it
        dirs = [{real_dir(c, path) for path in (c.export_path, c.ack_path, c.effective_processed_path,
                                               c.effective_failed_path)} for c in made]
        for a in dirs[0]:
            for b in dirs[1]:
                assert not (a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)), (mine, theirs)
    else:  # an independent reading: every path resolved against the login's home directory
        dirs = [{home_resolved(path) for path in (c.export_path, c.ack_path, c.effective_processed_path,
                                                  c.effective_failed_path)} for c in made]
        for a in dirs[0]:
            for b in dirs[1]:
                assert not (a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")), (
                    mine, theirs)


def home_resolved(path: str) -> str:
    import posixpath

    return posixpath.normpath(posixpath.join("/home/shared", path)).lower()


def real_dir(conn: ERPConnection, path: str) -> str:
    from connectors.transports import get_transport

    (local_root_of(conn.organization) / conn.host.strip("/")).mkdir(parents=True, exist_ok=True)
    with get_transport(conn.transport_settings()) as transport:
        transport.makedirs(path)
    # The directory the transport made, found by its unique name under the operator's root.
    return os.path.realpath(os.path.join(local_root_of(conn.organization), conn.host.strip("/"),
                                         *[p for p in path.split("/") if p not in ("", ".")]))

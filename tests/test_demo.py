"""What `make run` sets up: demo data and an admin whose printed password works."""

from __future__ import annotations

import re
from io import StringIO

from django.core.management import call_command
from django.test import Client

from connectors.models import ERPConnection
from orderflow.models import DraftOrder


def test_demo_loads_once_and_printed_password_logs_in(db, settings, tmp_path) -> None:
    settings.LOCAL_DROPZONE_ROOT = tmp_path
    call_command("load_demo", stdout=StringIO())
    call_command("load_demo", stdout=StringIO())  # rerun: nothing duplicated
    assert DraftOrder.objects.filter(organization__slug="demo").count() == 3
    conn = ERPConnection.objects.get(organization__slug="demo")
    assert conn.is_active and conn.transport == "local" and (tmp_path / "demo" / "inbound").is_dir()

    out = StringIO()
    call_command("create_demo_admin", stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue()).group(1)
    client = Client()
    response = client.post("/admin/login/", {"username": "admin", "password": password, "next": "/admin/"},
                           follow=True)
    assert response.status_code == 200 and "Draft orders" in response.content.decode()
    again = StringIO()
    call_command("create_demo_admin", stdout=again)
    assert "exists" in again.getvalue() and password not in again.getvalue()

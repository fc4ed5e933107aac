"""Admin pages beyond the change forms: test a connection, pin its host key, hurry or retry it, generate a
key pair; an export's files and answers.

Everything with a side effect (probe files on a customer's server, trust, queued work, new keys) runs
only on a POST with CSRF and its own permission; a GET shows a page and the last result.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from .models import ERPConnection, ERPExport
from .services.connection_test import PinError, pin_host_key, presented_key, test_connection
from .services.keys import generate_key_pair
from .services.overrides import failed_exports, retry_exports
from .work.wake import deliver_now, poll_now


def _connection(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> ERPConnection:
    """The connection, if the user may see it at all (their organizations only; a 404 otherwise)."""
    conn = model_admin.get_queryset(request).filter(pk=object_id).first() if object_id.isdigit() else None
    if conn is None:
        raise Http404("No such ERP connection.")
    if not model_admin.has_view_permission(request, conn):
        raise PermissionDenied
    return conn


ConnectionAction = Callable[..., HttpResponse | None]


def _post_on_connection(allowed: Callable[[admin.ModelAdmin, HttpRequest, ERPConnection], bool]
                        ) -> Callable[[ConnectionAction], Callable[..., HttpResponse]]:
    """A view that acts on one connection: POST only (CSRF), a connection the user sees, ``allowed`` to act.

    The action gets the connection; without a response of its own it returns to the connection's page.
    """

    def wrap(action: ConnectionAction) -> Callable[..., HttpResponse]:
        @wraps(action)
        def view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str, **kwargs: Any) -> HttpResponse:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            conn = _connection(model_admin, request, object_id)
            if not allowed(model_admin, request, conn):
                raise PermissionDenied
            response = action(model_admin, request, conn, **kwargs)
            return response or HttpResponseRedirect(reverse("admin:connectors_erpconnection_change", args=[conn.pk]))

        return view

    return wrap


def _may(permission: str = "", *, change: bool = False) -> Callable[[admin.ModelAdmin, HttpRequest, ERPConnection],
                                                                    bool]:
    """Who may act: users with ``connectors.<permission>`` (when named) who may (``change``) change the connection."""

    def allowed(model_admin: admin.ModelAdmin, request: HttpRequest, conn: ERPConnection) -> bool:
        return ((not permission or request.user.has_perm(f"connectors.{permission}"))
                and (not change or model_admin.has_change_permission(request, conn)))

    return allowed


def test_connection_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: the last test's steps and a button; POST (test permission): run the test and show every step."""
    conn = _connection(model_admin, request, object_id)
    can_test = request.user.has_perm("connectors.test_connection")
    if request.method == "POST":
        if not can_test:
            raise PermissionDenied
        result = test_connection(connection=conn, actor=request.user.get_username())
        event = result.event
    elif request.method == "GET":
        event = conn.events.filter(kind="connection_test").order_by("-created_at", "-id").first()
    else:
        return HttpResponseNotAllowed(["GET", "POST"])
    details = event.details if event else {}
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": ERPConnection._meta,
        "original": conn,
        "title": f"Test connection: {conn}",
        "event": event,
        "steps": details.get("steps", []),
        "offered": details if details.get("presented_key") else None,
        "can_test": can_test,
        "can_pin": request.user.has_perm("connectors.pin_host_key") and model_admin.has_change_permission(
            request, conn),
    }
    return TemplateResponse(request, "admin/connectors/erpconnection/test_connection.html", context)


@_post_on_connection(_may("pin_host_key", change=True))
def pin_host_key_view(model_admin: admin.ModelAdmin, request: HttpRequest, conn: ERPConnection) -> HttpResponse:
    """POST (pin permission): pin the key the server presented in a test of this connection, by that test's id."""
    try:
        event_id = int(request.POST.get("event", ""))
        key = presented_key(connection=conn, event_id=event_id)
    except (ValueError, PinError) as err:
        messages.error(request, str(err) if isinstance(err, PinError) else "No test was named; nothing was pinned.")
    else:
        pinned = pin_host_key(connection=conn, host_key=key, user=request.user.get_username())
        if not pinned.changed:
            messages.info(request, "That key is pinned already; nothing changed.")
            return HttpResponseRedirect(reverse("admin:connectors_erpconnection_test", args=[conn.pk]))
        messages.success(request, "Key pinned. Run the test again to check the connection with it.")
        if pinned.cleared:
            names = ", ".join(n.replace("_", " ") for n in pinned.cleared)
            messages.warning(request, f"The stored {names} belonged to the server that had the old key and were "
                                      "cleared: type them again on the connection's page before testing.")
        if pinned.ca_dropped:
            messages.warning(request, "From now on only this certificate is accepted; the certificate authorities "
                                      "are no longer asked. Pin the server's next certificate before it changes.")
        failed = failed_exports(conn).count()
        if failed:
            messages.warning(request, f"{failed} export(s) of this connection failed for good; once the test passes, "
                                      "retry them with the button on the connection's page.")
    return HttpResponseRedirect(reverse("admin:connectors_erpconnection_test", args=[conn.pk]))




# -- an export's files -----------------------------------------------------------------------


def _export(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> ERPExport:
    """The export, if the user may see it (their organizations) and may download files (its permission)."""
    export = model_admin.get_queryset(request).filter(pk=object_id).first() if _is_uuid(object_id) else None
    if export is None:
        raise Http404("No such ERP export.")
    if not (request.user.has_perm("connectors.download_payload") and model_admin.has_view_permission(request, export)):
        raise PermissionDenied
    return export


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def payload_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """The exact bytes delivered (the archive), streamed; never from a public URL."""
    export = _export(model_admin, request, object_id)
    if export.payload is None:
        raise Http404("This export's file was not built yet." if not export.filename else
                      "This export's archived file was lost.")
    inline = request.GET.get("inline") == "1"
    return FileResponse(io.BytesIO(export.payload), as_attachment=not inline, filename=export.filename,
                        content_type="application/json" if not inline else "text/plain; charset=utf-8")


def answer_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """The ERP's answer (ack or error body), pretty-printed."""
    export = _export(model_admin, request, object_id)
    if export.ack_body is None:
        raise Http404("No answer was recorded for this export.")
    text = json.dumps(export.ack_body, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


# -- hurrying a connection ------------------------------------------------------------------------


@_post_on_connection(_may("run_now"))
def run_now_view(model_admin: admin.ModelAdmin, request: HttpRequest, conn: ERPConnection, *, what: str) -> None:
    """POST (run_now permission): poll this connection now, or deliver its pending exports without waiting for
    their retry time."""
    if what == "poll":
        poll_now(conn.pk)
        messages.success(request, f"A poll of {conn} is queued; reload this page in a moment to see its result.")
    elif count := deliver_now(conn.pk):
        messages.success(request, f"{count} pending export(s) of {conn} are being delivered now.")
    else:
        messages.warning(request, f"Nothing to deliver: {conn} has no pending export.")


@_post_on_connection(_may("retry_export"))
def retry_failed_view(model_admin: admin.ModelAdmin, request: HttpRequest, conn: ERPConnection) -> None:
    """POST (retry permission): retry this connection's current exports whose delivery failed for good."""
    counts = retry_exports(exports=failed_exports(conn), actor=request.user.get_username())
    messages.success(request, f"{counts.done} failed export(s) of {conn} queued for delivery again.")


@_post_on_connection(_may(change=True))
def generate_key_view(model_admin: admin.ModelAdmin, request: HttpRequest, conn: ERPConnection) -> None:
    """POST (change permission): a new Ed25519 key pair; shows the public line to send to the ERP's admin."""
    line = generate_key_pair(connection=conn, actor=request.user.get_username())
    messages.success(request, format_html("New key pair generated; the private key is stored encrypted. Send this "
                                          "public key to the ERP's admin for user {}: <code class=\"of-public-key\">"
                                          "{}</code>", conn.username or "(none yet)", line))

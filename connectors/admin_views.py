"""Admin pages of an ERP connection beyond the change form: test it, pin its host key."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from .models import ERPConnection
from .services.connection_test import pin_host_key, test_connection


def _connection(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> ERPConnection:
    conn = get_object_or_404(ERPConnection, pk=object_id)
    if not model_admin.has_view_permission(request, conn):
        raise PermissionDenied
    return conn


def test_connection_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """Runs the test and shows every step; offers to pin the presented host key."""
    conn = _connection(model_admin, request, object_id)
    result = test_connection(connection=conn)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": ERPConnection._meta,
        "original": conn,
        "title": f"Test connection: {conn}",
        "result": result,
        "can_pin": model_admin.has_change_permission(request, conn) and result.host_key_error is not None,
    }
    return TemplateResponse(request, "admin/connectors/erpconnection/test_connection.html", context)


def pin_host_key_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    conn = _connection(model_admin, request, object_id)
    if not model_admin.has_change_permission(request, conn):
        raise PermissionDenied
    key = request.POST.get("host_key", "").strip()
    # One printable line, as the test page offered it; anything else is not a key we showed.
    if not key or len(key) > 4000 or any(ord(c) < 32 for c in key):
        messages.error(request, "That is not a host key the test offered; nothing was pinned.")
    else:
        pin_host_key(connection=conn, host_key=key, user=request.user.get_username())
        messages.success(request, "Host key pinned. The test below ran again with it.")
    return HttpResponseRedirect(reverse("admin:connectors_erpconnection_test", args=[conn.pk]))

"""The operator's endpoints: /metrics (Prometheus), /healthz and /readyz (probes).  Thin: services elsewhere.

All three are answered by ``middleware.ProbeMiddleware`` before Django's host check and HTTPS redirect, so a
load balancer or the kubelet can ask the process by its address over plain HTTP.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import metrics as metrics_page
from . import probes


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers; nothing else is asked (a database outage must not restart every web process)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    ready, checks = probes.readiness()
    response = JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                            status=200 if ready else 503)
    # A 503 here is an answer, not a server error: probes.py logs each check's change once, where Django
    # would log an ERROR for every probe (every few seconds) while a dependency is down.
    response._has_been_logged = True  # type: ignore[attr-defined]  # what django.utils.log.log_response reads
    return response


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    try:
        body = metrics_page.render()
    except DatabaseError:  # Prometheus records the scrape as failed (up == 0): alert on that
        return HttpResponse("the database is unreachable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=metrics_page.CONTENT_TYPE)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scrape may proceed: the right bearer token, or no token set and METRICS_PUBLIC on."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        response = HttpResponse("a bearer token is required (METRICS_TOKEN)\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="orderflow metrics"'
        return response
    if settings.METRICS_PUBLIC:
        return None
    return HttpResponse("/metrics is off: set METRICS_TOKEN, or METRICS_PUBLIC=true where only your network "
                        "reaches this port (README, Observability)\n", status=403, content_type="text/plain")

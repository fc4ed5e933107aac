"""Answer /healthz, /readyz and /metrics first, before Django's host check and HTTPS redirect.

A load balancer's health check or the kubelet asks the process by its address (Host: 10.0.0.7:8000), over
plain HTTP: ALLOWED_HOSTS would answer 400 and SECURE_SSL_REDIRECT a 301, neither of which says whether
the process is healthy.  These three paths build no link, set no cookie and read no session, so skipping
those checks for them (and only them) is safe; /metrics still wants its token (views.py).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import views

PATHS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics,
}


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PATHS.get(request.path_info)
        return view(request) if view is not None else self.get_response(request)

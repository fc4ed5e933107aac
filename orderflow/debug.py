"""Error reports never show secrets, not even Django's DEBUG page.

Django's SafeExceptionReporterFilter hides sensitive POST fields and
settings only when DEBUG is False; with DEBUG on (a developer's machine, or a
misconfigured server) its technical 500 page shows a password that was just
typed into a form.  This filter hides them always.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter


class AlwaysSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    def is_active(self, request: HttpRequest | None) -> bool:
        return True

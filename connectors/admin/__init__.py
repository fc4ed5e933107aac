"""The connector admin: connections, exports, events, and the order admin's push action and exports."""

from django.contrib import admin

from . import connections, drafts, events, exports, queue  # noqa: F401  (registers the model admins)

# The home page starts with every connection's health (templates/admin/connectors/health.html).
admin.site.index_template = "admin/orderflow_index.html"

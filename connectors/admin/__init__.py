"""The connector admin: connections, exports, events, and the order admin's push action and exports."""

from . import connections, drafts, events, exports, queue  # noqa: F401  (registers the model admins)

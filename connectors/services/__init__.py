"""The verbs of the connector: each module holds one job.

- ``events``: write the timeline admins read.
- ``connection_test``: step-by-step check of a connection, host-key pinning.
- ``pushing``: draft approved -> export row -> delivery enqueued after commit.
- ``delivery``: claim due exports, render, archive, upload atomically.
- ``polling``: read ack/error files and apply them.
"""

"""The verbs shared by the connector's flows, one module each.

- ``lifecycle``: the only writer of an export's and a draft's status, from a declared table.
- ``events``: the timeline admins read; ``rowwrites``: many rows in few statements.
- ``overrides``: staff verbs (retry, cancel, record an answer given outside the dropzone).
- ``connection_test``: a step-by-step check of a connection, host-key pinning; ``keys``: key pairs.
- ``health``: where each connection stands; ``alerts``: mail when a problem starts and ends.

The flows themselves live in ``connectors/outbound`` (push, deliver) and ``connectors/inbound`` (poll, answers);
who runs them, when and with which budget in ``connectors/work``.
"""

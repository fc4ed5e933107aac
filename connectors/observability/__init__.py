"""What an operator's stack watches: Prometheus metrics, health and readiness probes, JSON logs.

``tallies`` counts an engine's work (written with its heartbeat); ``gauges`` reads the database's state;
``metrics`` turns both into the /metrics page; ``probes`` are /healthz and /readyz; ``logs`` is the JSON
log format and the ids it carries.  docs/observability.md says how to wire them.
"""

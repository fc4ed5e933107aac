"""What an operator's stack watches: Prometheus metrics, health and readiness probes.

``tallies`` counts an engine's work (written with its heartbeat); ``gauges`` reads the database's state;
``metrics`` turns both into the /metrics page; ``probes`` are /healthz and /readyz.
"""

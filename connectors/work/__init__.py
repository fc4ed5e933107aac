"""The work model (docs/work-model.md): who runs what, on which slot, with which budget.

``schedules`` (django-q2's every-minute and daily tasks), ``leases`` (claims on rows that a dead
process loses), ``sessions`` (one open transport per job), ``stop`` (Ctrl-C ends work at its next pause).
"""

"""Property-based (hypothesis) tests: file names, mappings and ack files from hostile input.

Each test sets ``max_examples`` itself and stays within a few seconds: CI runs
the suite twice (SQLite and PostgreSQL). ``database=None``: nothing is written
to ``.hypothesis/`` in the working tree; a failure prints its example.
"""

"""The file contract with the ERP (docs/dropzone-json-v1.md), pure: no Django, no I/O.

``payloads`` builds the JSON v1 document and its file name from plain values, ``mapping`` applies a
connection's rewrites to it, ``acks`` reads the ERP's ack and error files (``clipped``: what of their
texts is kept), ``jsontext`` measures JSON text before it is parsed.  The ERP simulator and the tests
use them without a database.
"""

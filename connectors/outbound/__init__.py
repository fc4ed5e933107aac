"""Outbound: an approved draft becomes an export (``pushing``) whose frozen file (``documents``) is
delivered to the ERP's dropzone (``delivery``).  Statuses change only through services/lifecycle.py."""

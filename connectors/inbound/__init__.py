"""Inbound: the ERP's ack and error files are read (``polling``) and applied to their exports
(``answers``).  Statuses change only through services/lifecycle.py."""

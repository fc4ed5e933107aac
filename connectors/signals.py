"""Turns status changes made outside the services into the same lifecycle verbs.

Staff pushes go through ``lifecycle.push`` directly.  Code elsewhere that
saves a draft as APPROVED (a shell, another app) gets the same outcome
through ``lifecycle.approve_saved``, which decides from the database, not from
what the instance was loaded with, so refreshed or stale instances behave.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from orderflow.models import DraftOrder

from .models import ERPConnection
from .outbound import pushing
from .services import lifecycle
from .work import wake


@receiver(post_save, sender=DraftOrder)
def push_on_approval(sender: type, instance: DraftOrder, update_fields: Any = None, **kwargs: Any) -> None:
    if instance.status != DraftOrder.Status.APPROVED:
        return
    if update_fields is not None and "status" not in update_fields:
        return
    wake.deliver_soon(lifecycle.approve_saved(draft_id=instance.pk).connection_ids)


@receiver(post_save, sender=ERPConnection)
def attach_on_activation(sender: type, instance: ERPConnection, **kwargs: Any) -> None:
    if instance.is_active:
        pushing.attach_waiting_exports(connection=instance)

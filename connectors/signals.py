"""The one place where "draft became APPROVED" turns into a push.

post_init remembers the status a draft was loaded with, so post_save reacts
to the change into APPROVED only, not to every save of an approved draft.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_init, post_save
from django.dispatch import receiver

from orderflow.models import DraftOrder

from .models import ERPConnection
from .services import pushing


@receiver(post_init, sender=DraftOrder)
def remember_status(sender: type, instance: DraftOrder, **kwargs: Any) -> None:
    instance._loaded_status = instance.status if instance.pk and not instance._state.adding else None


@receiver(post_save, sender=DraftOrder)
def push_on_approval(sender: type, instance: DraftOrder, created: bool, **kwargs: Any) -> None:
    became_approved = instance.status == DraftOrder.Status.APPROVED and instance._loaded_status != instance.status
    instance._loaded_status = instance.status
    if became_approved:
        pushing.create_export_for_approved_draft(draft=instance)


@receiver(post_save, sender=ERPConnection)
def attach_on_activation(sender: type, instance: ERPConnection, **kwargs: Any) -> None:
    if instance.is_active:
        pushing.attach_waiting_exports(connection=instance)

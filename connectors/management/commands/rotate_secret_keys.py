"""Re-encrypt every stored secret with the first key in FIELD_ENCRYPTION_KEYS.

Idempotent: a secret already on the first key is left alone, so a second run
reports 0 re-encrypted.  Rows that no configured key can read are listed (id,
name, field; never a value) and make the command exit non-zero.  Each row is
written with a compare-and-set on its old token, so a secret changed in the
admin meanwhile is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models

from connectors.crypto import EncryptedTextField, Sealed, SecretDecryptionError, is_current, rotate


@dataclass
class RotationReport:
    rotated: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[str] = field(default_factory=list)


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with EncryptedTextField columns, and their attribute names."""
    found = []
    for model in apps.get_models():
        names = [f.attname for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found


def _label(obj: models.Model) -> str:
    name = getattr(obj, "name", "")
    return f"{obj._meta.label} id={obj.pk}" + (f" {name!r}" if name else "")


def rotate_secret_keys(*, dry_run: bool = False) -> RotationReport:
    """Re-encrypt what is not on the first key yet (``dry_run``: only count)."""
    report = RotationReport()
    for model, names in encrypted_fields():
        extra = ["name"] if any(f.name == "name" for f in model._meta.concrete_fields) else []
        for obj in model._base_manager.order_by("pk").only("pk", *extra, *names).iterator(chunk_size=500):
            for name in names:
                value = getattr(obj, name)
                if not isinstance(value, Sealed) or not value:
                    continue
                if is_current(value.token):
                    report.current += 1
                    continue
                try:
                    token = rotate(value.token)
                except SecretDecryptionError:
                    report.unreadable.append(f"{_label(obj)} field {name}")
                    continue
                if dry_run:
                    report.rotated += 1
                elif model._base_manager.filter(pk=obj.pk, **{name: value}).update(**{name: Sealed(token)}):
                    report.rotated += 1
                else:
                    report.changed_meanwhile += 1
    return report


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored connection secret with the first key in FIELD_ENCRYPTION_KEYS. "
        "Lists the rows no configured key can decrypt (exit status 1 if there are any)."
    )

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--dry-run", action="store_true", help="Only count and list; write nothing.")

    def handle(self, *args: object, dry_run: bool, **options: object) -> None:
        report = rotate_secret_keys(dry_run=dry_run)
        verb = "would be re-encrypted" if dry_run else "re-encrypted"
        self.stdout.write(f"{report.rotated} secret(s) {verb} with the first key; "
                          f"{report.current} already on it.")
        if report.changed_meanwhile:
            self.stdout.write(f"{report.changed_meanwhile} secret(s) changed while this ran and were left as saved; "
                              "run the command again.")
        if report.unreadable:
            self.stderr.write("No key in FIELD_ENCRYPTION_KEYS decrypts these secrets:")
            for line in report.unreadable:
                self.stderr.write(f"  {line}")
            raise CommandError(
                f"{len(report.unreadable)} stored secret(s) cannot be decrypted. Put the key they were encrypted "
                "with back into FIELD_ENCRYPTION_KEYS (after the first), or enter those secrets again in the admin."
            )

from django.core.management.base import BaseCommand, CommandError

from connectors.models import ERPConnection
from connectors.services.connection_test import test_connection


class Command(BaseCommand):
    help = "Test an ERP connection step by step (by id or name); exits non-zero when a step fails."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("connection", help="ERPConnection id or name")

    def handle(self, *args: object, connection: str, **options: object) -> None:
        matches = ERPConnection.objects.filter(name=connection)
        if connection.isdigit():
            matches = ERPConnection.objects.filter(pk=int(connection)) | matches
        if matches.count() != 1:
            found = "no connection" if not matches else f"{matches.count()} connections"
            raise CommandError(f"{found} match {connection!r}; give the id instead.")
        result = test_connection(connection=matches.get())
        width = max(len(s.name) for s in result.steps) if result.steps else 10
        for step in result.steps:
            mark = "ok  " if step.ok else "FAIL"
            self.stdout.write(f"{mark} {step.name:<{width}} {step.seconds:>7.3f}s  {step.detail}")
        if result.host_key_error is not None:
            self.stdout.write(f"Presented host key: {result.host_key_error.presented_key}")
        if not result.ok:
            raise CommandError(result.summary)
        self.stdout.write(self.style.SUCCESS(result.summary))

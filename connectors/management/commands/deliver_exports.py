from django.core.management.base import BaseCommand, CommandError

from connectors.models import ERPConnection
from connectors.services import delivery, pushing


class Command(BaseCommand):
    help = "Deliver due exports now (all active connections, or one) and print what happened."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--connection", type=int, help="ERPConnection id")

    def handle(self, *args: object, connection: int | None, **options: object) -> None:
        connections = ERPConnection.objects.filter(is_active=True)
        if connection is not None:
            connections = ERPConnection.objects.filter(pk=connection)
            if not connections.exists():
                raise CommandError(f"No ERP connection with id {connection}.")
        for conn in connections:
            pushing.attach_waiting_exports(connection=conn)
            report = delivery.deliver_due_exports(connection=conn)
            self.stdout.write(str(report))
            for label, names in (("sent", report.sent), ("retrying", report.retrying), ("failed", report.failed)):
                for name in names:
                    self.stdout.write(f"  {label}: {name}")

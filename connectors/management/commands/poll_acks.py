from django.core.management.base import BaseCommand, CommandError

from connectors.models import ERPConnection
from connectors.services import polling


class Command(BaseCommand):
    help = "Poll the ack dir of every active connection (or one) now, due or not, and print a summary."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--connection", type=int, help="ERPConnection id")

    def handle(self, *args: object, connection: int | None, **options: object) -> None:
        connections = ERPConnection.objects.filter(is_active=True)
        if connection is not None:
            connections = connections.filter(pk=connection)
            if not connections.exists():
                raise CommandError(f"No active ERP connection with id {connection}.")
        failed = False
        for conn in connections:
            report = polling.poll_connection(connection=conn, force=True)
            if report is None:
                self.stdout.write(f"{conn}: being polled by another worker right now; skipped")
                continue
            failed = failed or bool(report.error)
            self.stdout.write(str(report))
        if failed:
            raise CommandError("At least one poll failed (see above and the connection's events).")

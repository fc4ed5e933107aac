from django.core.management.base import BaseCommand, CommandError

from connectors.models import ERPConnection
from connectors.outbound import pushing
from connectors.work import jobs


class Command(BaseCommand):
    help = ("Deliver every due export now (all active connections, or one), in bounded runs, "
            "printing progress and a summary.")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--connection", type=int, help="ERPConnection id")
        parser.add_argument("--verbose", action="store_true", help="list every export by name")

    def handle(self, *args: object, connection: int | None, verbose: bool, **options: object) -> None:
        connections = ERPConnection.objects.filter(is_active=True)
        if connection is not None:
            connections = ERPConnection.objects.filter(pk=connection)
            if not connections.exists():
                raise CommandError(f"No ERP connection with id {connection}.")
            if not connections[0].is_active:
                raise CommandError(f"ERP connection {connection} is not active: it delivers nothing.")
        failed = 0
        for conn in connections:
            pushing.attach_waiting_exports(connection=conn)
            totals = {"sent": 0, "to retry": 0, "failed": 0}
            for run, report in enumerate(jobs.drain_deliveries(conn), start=1):
                totals["sent"] += len(report.sent)
                totals["to retry"] += len(report.retrying)
                totals["failed"] += len(report.failed)
                self.stdout.write(f"{conn}: run {run}: {report.handled} export(s) — {len(report.sent)} sent, "
                                  f"{len(report.retrying)} to retry, {len(report.failed)} failed")
                if verbose:
                    for label, names in (("sent", report.sent), ("retrying", report.retrying),
                                         ("failed", report.failed)):
                        for name in names:
                            self.stdout.write(f"  {label}: {name}")
            failed += totals["failed"]
            self.stdout.write(f"{conn}: done: " + ", ".join(f"{n} {label}" for label, n in totals.items()))
        if failed:
            raise CommandError(f"{failed} export(s) failed for good (see the exports' last error).")


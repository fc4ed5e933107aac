from django.core.management.base import BaseCommand, CommandError

from connectors.inbound import polling
from connectors.models import ERPConnection

MAX_RUNS = 1_000  # a backstop: each run handles up to MAX_ACKS_PER_POLL files and says if more wait


class Command(BaseCommand):
    help = ("Poll the ack dir now, due or not, until no ready file is left: every connection that is active "
            "or still awaits answers, or the one given (any connection). Prints progress and a summary.")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--connection", type=int, help="ERPConnection id (active or not)")

    def handle(self, *args: object, connection: int | None, **options: object) -> None:
        connections = polling.pollable()
        if connection is not None:
            connections = ERPConnection.objects.filter(pk=connection)
            if not connections.exists():
                raise CommandError(f"No ERP connection with id {connection}.")
        failed = False
        for conn in connections:
            totals: dict[str, int] = {}
            for run in range(1, MAX_RUNS + 1):
                report = polling.poll_connection(connection=conn, force=True)
                if report is None:
                    self.stdout.write(f"{conn}: being polled by another worker right now; skipped")
                    break
                for outcome, n in report.outcomes.items():
                    totals[outcome] = totals.get(outcome, 0) + n
                if report.error:
                    failed = True
                    self.stdout.write(str(report))
                    break
                if report.more:
                    self.stdout.write(f"{conn}: run {run}: {report.handled} file(s); more waiting")
                    continue
                summary = ", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "no ack files"
                self.stdout.write(f"{conn}: {summary}")
                break
        if failed:
            raise CommandError("At least one poll failed (see above and the connection's events).")

from django.core.management.base import BaseCommand, CommandError

from connectors.inbound import polling
from connectors.models import ERPConnection
from connectors.work import jobs

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
            failed |= self._drain(conn)
        if failed:
            raise CommandError("At least one poll failed (see above and the connection's events).")

    def _drain(self, conn: ERPConnection) -> bool:
        """Poll until no ready file is left; True if a poll failed."""
        totals: dict[str, int] = {}
        reports = 0
        for run, report in enumerate(jobs.drain_polls(conn, limit=MAX_RUNS), start=1):
            reports += 1
            for outcome, n in report.outcomes.items():
                totals[outcome] = totals.get(outcome, 0) + n
            if report.error:
                self.stdout.write(str(report))
                return True
            if report.more:
                self.stdout.write(f"{conn}: run {run}: {report.handled} file(s); more waiting")
        if not reports:
            self.stdout.write(f"{conn}: being polled by another worker right now; skipped")
            return False
        summary = ", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "no ack files"
        self.stdout.write(f"{conn}: {summary}")
        return False

"""``simulate_erp``: play the ERP of one connection (docs/erp-simulator.md). Thin: the work is connectors.simulator."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from time import sleep
from typing import TypeVar

from django.core.management.base import BaseCommand, CommandError

from connectors.demo import demo_connection, not_the_demo
from connectors.models import ERPConnection
from connectors.simulator import ERPSimulator, SimulatorSettings
from connectors.transports import Transport, TransportError, TransportSettings, get_transport

T = TypeVar("T")


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
        if not number >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}")
        return number
    return parse


class Command(BaseCommand):
    help = ("Act as the ERP of one connection (active or not): answer each export file in the export dir "
            "with an ack_ or error_ file in the ack dir, then remove it. Exits 1 if the dropzone cannot be reached.")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--connection", type=int, metavar="ID", help="ERPConnection id")
        which.add_argument("--demo", action="store_true",
                           help="the demo's own local dropzone (`make run`); stops if it is repointed elsewhere")
        parser.add_argument("--reject-sku", dest="reject_skus", action="extend", nargs="+", default=[],
                            metavar="SKU", help="reject every line with this SKU (UNKNOWN_SKU); repeatable")
        parser.add_argument("--delay", type=_seconds(0), default=0.0, metavar="SECONDS",
                            help="answer a file only once it has been seen this many seconds")
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=_seconds(0.1), default=5.0, metavar="SECONDS",
                            help="seconds between passes without --once (default 5)")

    def handle(self, *args: object, connection: int | None, demo: bool, reject_skus: list[str], delay: float,
               once: bool, interval: float, **options: object) -> None:
        conn = demo_connection() if demo else ERPConnection.objects.filter(pk=connection).first()
        if demo and (problem := not_the_demo(conn)):
            raise CommandError(f"Not simulating the demo ERP: {problem}.")
        if conn is None:
            raise CommandError(f"No ERP connection with id {connection}.")
        try:
            simulator = ERPSimulator(SimulatorSettings(
                export_dir=conn.export_path, ack_dir=conn.ack_path, temp_suffix=conn.temp_suffix,
                reject_skus=frozenset(reject_skus), mapping=conn.mapping or None, delay=delay))
        except ValueError as err:
            raise CommandError(f"{conn}: {err}") from err
        settings = conn.transport_settings()
        where = f"{settings.kind} {settings.host}".rstrip()  # never the user name or a secret
        self.stdout.write(f"Simulating the ERP of {conn} on {where}: exports from {conn.export_path}, "
                          f"answers to {conn.ack_path}")
        if conn.mapping:
            self.stdout.write("This connection has a mapping: the JSON Schema check is skipped; a file must still "
                              "be one JSON object with an export_id.")
        number = 0
        try:
            if once and delay:
                self._with_transport(settings, simulator.observe, 1)
                sleep(delay)
            while True:
                number += 1
                if demo and (problem := not_the_demo(demo_connection())):  # an admin repointed it meanwhile
                    self.stdout.write(f"Stopped: {problem}.")
                    return
                try:
                    self._pass(settings, simulator, number)
                except CommandError as err:
                    # A failing first pass is a setup problem; later, only faults that cannot heal stop the loop.
                    cause = err.__cause__
                    if once or number == 1 or not isinstance(cause, TransportError) or cause.permanent:
                        raise
                    self.stderr.write(f"{err}; trying again in {interval:g} s")
                if once:
                    return
                sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write(f"Stopped after {number} pass(es).")

    def _with_transport(self, settings: TransportSettings, work: Callable[[Transport], T], number: int) -> T:
        # A fresh connection per pass: a server that dropped us between passes costs nothing.
        try:
            with get_transport(settings) as transport:
                return work(transport)
        except TransportError as err:
            raise CommandError(f"pass {number}: the dropzone failed: {err.message}") from err

    def _pass(self, settings: TransportSettings, simulator: ERPSimulator, number: int) -> None:
        report = self._with_transport(settings, simulator.run_pass, number)
        for result in report.results:
            self.stdout.write(str(result))
        self.stdout.write(f"pass {number}: {report.summary()}")

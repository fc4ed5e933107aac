"""Reading /metrics as Prometheus would: parse the text format into samples the tests can ask for."""

from __future__ import annotations

from collections.abc import Mapping

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from connectors.observability import metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Client | None = None, **headers: str) -> Samples:
    metrics.forget()  # a fresh page, not the one cached for the scrape interval
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels`` (PromQL's sum without ...)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= set(have))


def series(samples: Samples, name: str) -> list[Mapping[str, str]]:
    return [dict(have) for (n, have) in samples if n == name]

"""The dashboard, the alert rules and the README speak of the metrics /metrics has, and of all of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from connectors.observability import broker
from connectors.observability.metrics import Collector

DOCS = Path(settings.BASE_DIR) / "docs" / "observability"
NAME = re.compile(r"\borderflow_[a-z_]+[a-z]\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


@pytest.fixture
def families(db: None, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every family the page can have (django-q2's cluster stats appear with the Redis broker)."""
    monkeypatch.setattr(broker, "look", lambda **kw: broker.BrokerState("redis", True, 0, 1, 2))
    return {family.name for family in Collector().collect()}


def exposed(name: str, families: set[str]) -> bool:
    return name in families or any(name.endswith(s) and name.removesuffix(s) in families for s in SUFFIXES)


def test_the_dashboard_and_the_rules_use_only_exposed_metrics(families: set[str]) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    rules = [line.split("expr:", 1)[1] for line in (DOCS / "alerts.yml").read_text().splitlines() if "expr:" in line]
    assert len(rules) >= 13
    used = {name for text in exprs + rules for name in NAME.findall(text)}
    assert sorted(name for name in used if not exposed(name, families)) == []


def test_the_readme_explains_every_metric(families: set[str]) -> None:
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    documented = set(NAME.findall(readme))
    missing = sorted(f for f in families if f not in documented and f"{f}_total" not in documented)
    assert missing == []

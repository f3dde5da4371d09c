"""The Grafana dashboard and the alert rules in deploy/grafana/ name only metrics the service exports.

Every PromQL expression (each panel's targets, each alert) is read, its metric
names extracted (functions, keywords, label matchers, grouping labels and
ranges set aside), and each name must be a series of
``webhook_service.metrics`` (a counter's ``_total``, a histogram's
``_bucket``/``_sum``/``_count``) or a database gauge. A renamed metric fails
here instead of leaving an empty panel or a silent alert.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from webhook_service import metrics

pytestmark = pytest.mark.dbless

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(0), text[match.end():].lstrip()
        if rest.startswith("(") or name.lower() in KEYWORDS:
            continue  # a function or an operator
        names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((DEPLOY / "webhook_service.json").read_text()))
    return found


def alert_rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_extraction_finds_metrics_and_skips_the_rest():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m])))') == {"a_bucket"}
    assert metric_names("sum(increase(a_total[1h])) > 0 and max(b) == 0") == {"a_total", "b"}


def test_every_panel_names_only_exported_metrics():
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and used <= metrics.exported_names(), sorted(used - metrics.exported_names())


def test_every_alert_names_only_exported_metrics_and_says_what_to_do():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"WebhookCallbacksMissing", "WebhookInboxFailedRows", "WebhookJobsStuck", "GladiaRateLimited",
            "GladiaUnauthorized"} <= names
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used and used <= metrics.exported_names(), (rule["alert"], sorted(used - metrics.exported_names()))
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_is_importable():
    dashboard = json.loads((DEPLOY / "webhook_service.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(target["datasource"]["uid"] == "${datasource}"
               for panel in dashboard["panels"] for target in panel.get("targets", []))

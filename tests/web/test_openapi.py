"""The JSON API's OpenAPI description: valid, complete, served, and true of the app under fuzzing.

The fuzz test is schemathesis driven by the description, against the app on a
real socket over the report fixtures: for every operation it generates valid
and invalid parameters and requires no 5xx, a status code the description
lists, and a body that matches the description's schema. Examples are bounded
so the run stays within seconds per database.
"""

from __future__ import annotations

import copy

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi import checks as openapi_checks

from webhook_service.models import JOB_STATES
from webhook_service.web.openapi import openapi_document



def _fuzzed_description() -> dict:
    """The description without its security requirement: the fuzzer sends an operator's credentials on
    every request (``operator_headers``); answers without them are the auth matrix's tests."""
    document = copy.deepcopy(openapi_document())
    document.pop("security", None)
    for item in document["paths"].values():
        for operation in item.values():
            operation.pop("security", None)
    return document


schema = schemathesis.openapi.from_dict(_fuzzed_description())

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]


@pytest.fixture
def site(report_site: str) -> str:
    return report_site



def test_the_description_is_valid_openapi_3_1():
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert "bearerAuth" in document["components"]["securitySchemes"]


def test_every_api_route_of_the_app_is_described(app):
    described = set(openapi_document()["paths"])
    routes = {rule.rule.replace("<", "{").replace(">", "}") for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api")}
    assert routes, "the app has no /api route"
    assert routes <= described, f"routes missing from openapi.yaml: {sorted(routes - described)}"
    assert described <= routes, f"described but not served: {sorted(described - routes)}"
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api"):
            path = rule.rule.replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert method.lower() in openapi_document()["paths"][path], (method, path)


def test_job_states_are_the_models(app):
    assert tuple(openapi_document()["components"]["schemas"]["JobState"]["enum"]) == JOB_STATES


def test_the_app_serves_the_description(site, operator_headers):
    response = requests.get(f"{site}/api/openapi.json", headers=operator_headers, timeout=30)
    assert response.status_code == 200
    assert response.json() == openapi_document()


@schema.parametrize()
@hypothesis_settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, site, operator_headers):
    case.call_and_validate(base_url=site, headers=operator_headers, checks=CHECKS, timeout=30)


def _query_operations():
    """(path, operationId, {name: schema}) of every GET operation of the description with query parameters."""
    found = []
    for path, item in openapi_document()["paths"].items():
        operation = item.get("get") or {}
        params = {p["name"]: p.get("schema", {}) for p in operation.get("parameters", []) if p["in"] == "query"}
        if params:
            found.append((path, operation["operationId"], params))
    return found


def _concrete(path: str) -> str:
    return path.replace("{name}", "session_summary").replace("{gladia_id}", "none").replace("{fmt}", "txt")


@pytest.mark.parametrize(("path", "operation_id", "params"), _query_operations(), ids=lambda v: str(v)[:30])
def test_the_api_checks_its_query_against_the_description(client, path, operation_id, params):
    """The rules the API applies are the description's: the names it allows, and each integer's bounds."""
    url = _concrete(path)
    refused = client.get(url, query_string={"zz_unknown": "1"})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["message"].endswith("allowed: " + ", ".join(sorted(params)))
    for name, schema in params.items():
        if schema.get("type") != "integer":
            continue
        extra = {"limit": "10"} if name == "offset" else {}
        top = client.get(url, query_string={name: str(schema["maximum"]), **extra})
        # Accepted: 200, or the 404 of the placeholder session id once the query has passed.
        assert top.status_code in (200, 404), (name, top.get_json())
        over = client.get(url, query_string={name: str(schema["maximum"] + 1), **extra})
        assert over.status_code == 400 and f"between {schema['minimum']} and {schema['maximum']}" in \
            over.get_json()["error"]["message"], (name, over.get_json())


def test_the_rules_follow_an_edited_description(monkeypatch):
    """Editing a bound in the description is all it takes to change what the API accepts."""
    from webhook_service.web import params

    edited = copy.deepcopy(openapi_document())
    limit = next(p for p in edited["paths"]["/api/sessions"]["get"]["parameters"] if p["name"] == "limit")
    limit["schema"]["maximum"] = 7
    monkeypatch.setattr(params, "openapi_document", lambda: edited)
    params.rules.cache_clear()
    try:
        assert params.parse_query("listSessions", {"limit": "7"})["limit"] == 7
        with pytest.raises(params.InvalidParameter, match="between 1 and 7"):
            params.parse_query("listSessions", {"limit": "8"})
        assert params.parse_query("listSessions", {"state": "done, reconciled"})["state"] == ("done", "reconciled")
        with pytest.raises(params.InvalidParameter, match="must be one of queued"):
            params.parse_query("listSessions", {"state": "done,nope"})
    finally:
        params.rules.cache_clear()

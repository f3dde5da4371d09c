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

"""Hostile query parameters never reach the database as a 500: each is a 400 (or 404) that says why.

Every query parameter of every read route is tried with the values that used
to break a page: integers beyond PostgreSQL's bigint, dates whose offset moves
them out of years 1..9999, the last representable day, crafted cursors, NUL
bytes (PostgreSQL refuses them in text), unicode digits. The JSON API answers
with the project's JSON error body; the dashboard with its HTML error page.
Requests go over a real socket to the app on a migrated database holding the
report fixtures, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests

from webhook_service import reports

HUGE = str(2**63)  # one past PostgreSQL's bigint
HUGER = "9" * 26
BAD_WHEN = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-13-01", "a\x00b", "٢٠٢٤-٠١-٠١")
BAD_DAY = ("2024-13-01", "0001-01-01T00:00", "a\x00bcdefghi", "٢٠٢٤-٠١-٠١", "2024-1-1")
BAD_INT = (HUGE, HUGER, "-1", "1e20", "1.5", "NaN", "١٢", "a\x00")


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = (
    "!!!", "a", "a\x00b", _cursor({"a": 1}), _cursor([1, 2]), _cursor(["2024-01-01T00:00:00Z", "a", "b"]),
    _cursor(["0001-01-01T00:00:00+14:00", "job-a"]),  # used to be a 500 (OverflowError)
    _cursor(["2024-01-01T00:00:00Z", "job\x00a"]),  # used to be a 500 on PostgreSQL (NUL in text)
    _cursor(["2024-01-01T00:00:00Z", "x" * 500]),
)

API_CASES = (
    [("offset", v) for v in BAD_INT] + [("limit", v) for v in BAD_INT + ("0", "501")]
    + [("since", v) for v in BAD_WHEN] + [("until", v) for v in BAD_WHEN]
    + [("cursor", v) for v in BAD_CURSORS]
    + [("batch", "a\x00b"), ("batch", "b" * 201), ("state", "done\x00"), ("nope", "1")]
)
REPORT_CASES = (
    [("offset", v) for v in BAD_INT] + [("limit", v) for v in BAD_INT + ("0", str(reports.MAX_PAGE + 1))]
    + [("since", v) for v in BAD_DAY] + [("until", v) for v in BAD_DAY]
    + [("batch", "a\x00b"), ("batch", "b" * 201), ("nope", "1")]
)
DASHBOARD_OVERVIEW_CASES = [("since", v) for v in BAD_DAY] + [("until", v) for v in BAD_DAY] + [("batch", "a\x00b")]
DASHBOARD_SESSIONS_CASES = (
    [("page", v) for v in (HUGE, str(2**63 - 1), HUGER, "1e20", "0", "-1", "1.5", "١", "a\x00")]
    + [("batch", "a\x00b"), ("batch", "b" * 201), ("state", "done\x00")]
)
# Extreme values that are valid: they answer 200 with what they select.
GOOD_EXTREMES = (
    ("/api/sessions", {"since": "0001-01-01"}), ("/api/sessions", {"until": "9999-12-31T23:59:59Z"}),
    ("/api/sessions", {"offset": str(2**31 - 1)}), ("/api/sessions", {"batch": "é"}),
    ("/api/reports/session_summary", {"since": "0001-01-01", "until": "9999-12-31"}),
    ("/api/reports/daily_usage", {"until": "9999-12-31"}),
    ("/api/reports/session_summary", {"limit": "1", "offset": str(2**31 - 1)}),
    ("/dashboard", {"since": "0001-01-01", "until": "9999-12-31"}),
    ("/dashboard/sessions", {"page": "2"}),
)


@pytest.fixture
def site(report_site: str) -> str:
    return report_site



def _assert_json_400(response: requests.Response, name: str) -> None:
    assert response.status_code == 400, (name, response.status_code, response.text[:300])
    body = response.json()
    assert body["error"]["status"] == 400 and body["error"]["message"], body


@pytest.mark.parametrize(("name", "value"), API_CASES, ids=repr)
def test_session_list_refuses_bad_parameters(site, operator_headers, name, value):
    response = requests.get(f"{site}/api/sessions", params={name: value}, headers=operator_headers, timeout=30)
    _assert_json_400(response, name)


@pytest.mark.parametrize("report", sorted(reports.REPORTS))
@pytest.mark.parametrize(("name", "value"), REPORT_CASES, ids=repr)
def test_reports_refuse_bad_parameters(site, operator_headers, report, name, value):
    params = {name: value, **({"limit": "10"} if name == "offset" else {})}
    response = requests.get(f"{site}/api/reports/{report}", params=params, headers=operator_headers, timeout=30)
    _assert_json_400(response, name)


@pytest.mark.parametrize(("path", "params"), [("/dashboard", dict([case])) for case in DASHBOARD_OVERVIEW_CASES]
                         + [("/dashboard/sessions", dict([case])) for case in DASHBOARD_SESSIONS_CASES], ids=repr)
def test_dashboard_answers_an_html_400(site, operator_headers, path, params):
    response = requests.get(f"{site}{path}", params=params, headers=operator_headers, timeout=30)
    assert response.status_code == 400, (params, response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", ["/api/sessions/a%00b", "/api/sessions/" + "x" * 300, "/dashboard/sessions/a%00b",
                                  "/dashboard/sessions/" + "x" * 300, "/api/reports/a%00b"])
def test_ids_no_row_can_have_are_a_404(site, operator_headers, path):
    response = requests.get(f"{site}{path}", headers=operator_headers, timeout=30)
    assert response.status_code == 404, response.text[:300]


@pytest.mark.parametrize(("path", "params"), GOOD_EXTREMES, ids=repr)
def test_extreme_but_valid_values_answer(site, operator_headers, path, params):
    response = requests.get(f"{site}{path}", params=params, headers=operator_headers, timeout=30)
    assert response.status_code == 200, response.text[:300]


def test_until_the_last_day_keeps_every_row(site, operator_headers):
    everything = requests.get(f"{site}/api/reports/session_summary", headers=operator_headers, timeout=30).json()
    bounded = requests.get(f"{site}/api/reports/session_summary", params={"since": "0001-01-01", "until": "9999-12-31"},
                           headers=operator_headers, timeout=30).json()
    assert len(everything["rows"]) == 5
    assert bounded["rows"] == everything["rows"]

"""Security headers on every response, and the dashboard working under its Content-Security-Policy.

Routes are discovered from the app's URL map, so a new page gets the headers
checked without a new test. The browser tests load each dashboard page in
headless Chromium with the console logged: a blocked inline script or style
would be reported as a Content Security Policy violation, and the charts and
the language bars must still be drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

import report_fixtures
from browser import CHROMIUM, DevTools, log_in_and_open
from webhook_service.web.headers import CONTENT_SECURITY_POLICY

PATH_VALUES = {"gladia_id": "g-a", "session_id": "g-a", "name": "language_mix", "filename": "dashboard.js",
               "token": "not-a-token", "fmt": "srt"}
TRANSCRIPT_PAGES = ("/dashboard/sessions/g-a", "/api/sessions/g-a", "/api/sessions/g-a/transcript.txt",
                    "/dashboard/sessions/g-a/transcript.vtt")


@pytest.fixture
def site(db_url, live_app):
    report_fixtures.load(db_url)
    return live_app.url



def _get_paths(app) -> list[str]:
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods:
            paths.append(re.sub(r"<(?:\w+:)?(\w+)>", lambda m: PATH_VALUES[m.group(1)], rule.rule))
    return sorted(set(paths))


def test_every_get_route_carries_the_security_headers(app, site, operator_headers):
    paths = _get_paths(app)
    assert "/dashboard" in paths and "/api/sessions" in paths
    for path in paths:
        response = requests.get(site + path, headers=operator_headers, timeout=30, allow_redirects=False)
        assert response.status_code < 500, (path, response.status_code)
        assert response.headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY, path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert response.headers.get("Referrer-Policy") == "no-referrer", path


@pytest.mark.parametrize("path", TRANSCRIPT_PAGES)
def test_pages_with_transcripts_are_never_stored(site, operator_headers, path):
    response = requests.get(site + path, headers=operator_headers, timeout=30)
    assert response.status_code == 200
    assert "Thanks for calling." in response.text
    assert response.headers.get("Cache-Control") == "no-store"


@pytest.mark.parametrize("path", ["/dashboard/sessions/nope", "/dashboard/sessions?page=0", "/api/sessions/nope"])
def test_error_answers_carry_the_headers_too(site, operator_headers, path):
    response = requests.get(site + path, headers=operator_headers, timeout=30)
    assert response.status_code in (400, 404)
    assert response.headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert response.headers.get("Cache-Control") == "no-store"


def test_static_assets_stay_cacheable(site):
    response = requests.get(site + "/dashboard/static/dashboard.js", timeout=30)
    assert response.status_code == 200
    assert response.headers.get("Cache-Control") != "no-store"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/sessions", "/dashboard/sessions/g-a",
                                  "/dashboard/sessions?state=bogus"])
def test_pages_have_no_inline_script_style_or_handler(site, operator_headers, path):
    html = requests.get(site + path, headers=operator_headers, timeout=30).text
    assert not re.search(r"\sstyle\s*=", html, re.I), "inline style attribute"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event handler"
    assert not re.search(r"<style", html, re.I), "inline <style>"
    for script in re.findall(r"<script\b[^>]*>", html, re.I):
        assert "src=" in script or 'type="application/json"' in script, script


# Registered before any page script runs: every policy violation the page causes is kept for the test.
RECORD_VIOLATIONS = ("window.__violations = [];"
                     "document.addEventListener('securitypolicyviolation',"
                     " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")


def _browse_logged(url: str, workdir: Path, token: str) -> tuple[str, list[str]]:
    """Log in, load ``url`` in headless Chromium; the DOM after scripts ran, and the policy violations seen."""
    chromium = DevTools(workdir / "profile", "1400,1300")
    try:
        chromium.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_VIOLATIONS)
        log_in_and_open(chromium, url, token)
        return chromium.evaluate("document.documentElement.outerHTML"), chromium.evaluate("window.__violations")
    finally:
        chromium.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed (make system-deps)")
@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/sessions", "/dashboard/sessions/g-a"])
def test_dashboard_pages_break_no_policy_in_chromium(site, tmp_path, read_token, path):
    dom, violations = _browse_logged(site + path, tmp_path, read_token)
    assert violations == []
    if path == "/dashboard":
        assert 'data-charts="3"' in dom  # dashboard.js (and Chart.js) ran and drew the three charts
        widths = re.findall(r'<svg class="bar"[^>]*><rect width="([0-9.]+)"', dom)
        assert widths == ["45.7", "40.0", "14.3"]  # each language's share of speech, as a bar

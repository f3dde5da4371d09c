"""The dashboard in headless Chromium against the app on a real port.

Each test logs in through the login page as an operator would (typing a
token into its form), then loads a page once: Chromium runs its JavaScript,
takes a PNG screenshot and gives the DOM as it stands after the scripts ran. The tests
assert what the DOM shows and, for the charts, that their colours are really
painted in the screenshot.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import report_fixtures
from browser import CHROMIUM, browse

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed "
                                                          "(make system-deps)")

BLUE, TEAL, AMBER = (0x25, 0x63, 0xEB), (0x0D, 0x94, 0x88), (0xD9, 0x77, 0x06)


def text_of(dom: str, element_id: str) -> str:
    """The visible text inside the element with this id (tags stripped, spaces collapsed)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', dom, re.S)
    assert match, f"no element #{element_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(2))).strip()


def colour_counts(png: Path) -> Counter:
    from PIL import Image

    with Image.open(png) as image:
        return Counter(image.convert("RGB").get_flattened_data())


@pytest.fixture
def site(db_url, live_app):
    report_fixtures.load(db_url)
    return live_app.url


@pytest.fixture
def token(read_token):
    """The dashboard needs an operator: a read token, typed into the login page."""
    return read_token


def test_overview_shows_figures_and_draws_charts(site, tmp_path, token):
    shot = tmp_path / "overview.png"
    dom = browse(site + "/dashboard", shot, token)
    assert 'data-charts="3"' in dom  # dashboard.js created the three charts
    assert text_of(dom, "kpi-sessions") == "5"
    assert text_of(dom, "kpi-audio") == "3 min 30 s"  # 120 + 60 + 30 s
    assert text_of(dom, "kpi-completeness") == "75.0 %"
    languages = text_of(dom, "language-mix")
    assert re.search(r"en 1 3 6 4\.0 s 45\.7 %.*fr 1 1 4 3\.5 s 40\.0 %.*not reported 1 1 2 1\.2 s 14\.3 %", languages)
    errors = text_of(dom, "error-breakdown")
    assert "boom: bad payload" in errors and "Gladia error code 500" in errors
    colours = colour_counts(shot)
    # Bars of the usage chart (audio, billed) and of the callback chart are painted.
    for colour in (BLUE, TEAL):
        assert colours[colour] > 2000, f"chart colour {colour} barely on screen: {colours[colour]} px"


def test_overview_filters_and_bad_dates(site, tmp_path, token):
    dom = browse(site + "/dashboard?since=2026-03-02&batch=other", tmp_path / "filtered.png", token)
    assert text_of(dom, "kpi-sessions") == "1"
    assert "boom: bad payload" not in dom
    dom = browse(site + "/dashboard?since=2026-02-30", tmp_path / "bad.png", token)
    assert "invalid since" in text_of(dom, "error")


def test_sessions_list_with_state_filter(site, tmp_path, token):
    shot = tmp_path / "sessions.png"
    dom = browse(site + "/dashboard/sessions", shot, token)
    rows = re.findall(r'<tr data-job="([^"]+)"', dom)
    assert rows == ["job-d", "job-c", "job-e", "job-b", "job-a"]
    assert text_of(dom, "operator-name") == "test-read"  # the login page's session, with its sign-out form
    chips = text_of(dom, "state-filters")
    assert "all 5" in chips and "done 2" in chips and "failed 1" in chips and "streaming 0" in chips

    dom = browse(site + "/dashboard/sessions?state=failed", tmp_path / "failed.png", token)
    assert re.findall(r'<tr data-job="([^"]+)"', dom) == ["job-b"]
    assert "b.wav" in text_of(dom, "sessions") and "failed" in text_of(dom, "sessions")


def test_session_page_transcript_and_timeline(site, tmp_path, token):
    shot = tmp_path / "session.png"
    dom = browse(site + "/dashboard/sessions/g-a", shot, token)  # by Gladia id
    assert text_of(dom, "session-state") == "reconciled"
    transcript = text_of(dom, "transcript")
    order = [transcript.index(t) for t in ("Thanks for calling.", "Hello there.", "Je voudrais", "Sure.")]
    assert order == sorted(order)
    assert "partial words" not in transcript
    timeline = text_of(dom, "timeline")
    steps = ["queued", "streaming", "stream closed", "done", "reconciliation: retry", "reconciliation: reconciled"]
    positions = [timeline.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "via callback, 200 ms after Gladia sent it" in timeline
    assert shot.stat().st_size > 20_000


def test_unknown_session_is_a_404_page(site, client):
    response = client.get("/dashboard/sessions/nope")
    assert response.status_code == 404 and b"No session" in response.data
    assert client.get("/dashboard/sessions?state=bogus").status_code == 400
    assert client.get("/dashboard/sessions?page=0").status_code == 400
    assert client.get("/dashboard/sessions?batch=ghost").status_code == 404
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/dashboard")

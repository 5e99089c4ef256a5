"""The console in a real browser: Debian's headless Chromium driven by Playwright.

The service runs under uvicorn on a free local port against the test database, with two labels,
an AI company and an auditor. Each role signs in through the page, and what the pages show is
compared with what the API answers the same key. Another label's catalogues, tracks, uses and
audio are never shown, also when their URLs are typed in. Screenshots of every page go to
`.echoledger/test-output/console/`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import create_db_engine
from app.main import create_app
from app.models import Base
from tests.audio_synth import melody_track
from tests.conftest import PROCRASTINATE_TABLES
from tests.factories import Tenant, Tenants, audio_file, run_jobs, submit_check, upload
from tests.worlds import RATE, SR, Music, excerpt

CHROMIUM = os.environ.get("ECHOLEDGER_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
        reason=f"no Chromium at {CHROMIUM} (Debian package `chromium`)",
    ),
]

SHOTS = Path(__file__).resolve().parent.parent / ".echoledger" / "test-output" / "console"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean(engine: Engine) -> None:
    ours = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for table in PROCRASTINATE_TABLES + ours:
            conn.execute(sa.text(f'DELETE FROM "{table}"'))


class Live:
    """The running service, its tenants and what they own."""

    def __init__(self, base: str, api: httpx.Client, app: Any) -> None:
        self.base = base
        self.api = api
        self.app = app
        self.ids: dict[str, Any] = {}

    def get(self, tenant: Tenant, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def live(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, music: Music
) -> Iterator[Live]:
    """The service on a local port, and a world: label A with two indexed tracks, label B with
    one, an AI company whose checks used all three (one transposed), and an auditor."""
    engine = create_db_engine(database_url, pool_size=2)
    _clean(engine)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("console-data"),
        log_format="console",
        log_level="WARNING",
        run_worker=False,
    )
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=base, timeout=120)
    live = Live(base, api, app)
    tenants = Tenants(api, engine)  # type: ignore[arg-type]
    label_a, label_b = tenants.create("label", "Nordic Tapes"), tenants.create("label", "Other")
    company, auditor = tenants.create("ai_company", "Tune Labs"), tenants.auditor()
    cat_a = tenants.catalogue(label_a, rate_per_use_micros=RATE, threshold=0.3)
    cat_b = tenants.catalogue(label_b, rate_per_use_micros=RATE, threshold=0.3)
    tracks_a = [
        upload(api, label_a, cat_a["id"], music.track(s)).json()["id"]  # type: ignore[arg-type]
        for s in (11, 12)
    ]
    track_b = upload(api, label_b, cat_b["id"], music.track(13)).json()["id"]  # type: ignore[arg-type]
    run_jobs(settings, engine)
    app.state.service.index.sync()
    pieces = {
        "plain": music.write("console-11", lambda: excerpt(11, 4.0, 12.0)),
        "transposed": music.write("console-12-up2", lambda: excerpt(12, 2.0, 12.0, transpose=2)),
        "other": music.write("console-13", lambda: excerpt(13, 3.0, 12.0)),
    }
    checks = {}
    for name, path in pieces.items():
        answer = submit_check(api, company, path, generation_id=f"gen-{name}")  # type: ignore[arg-type]
        assert answer.status_code == 201, answer.text
        assert any(m["is_use"] for m in answer.json()["matches"]), name
        checks[name] = answer.json()["id"]
    # New terms after the checks: the catalogue shows both versions, the uses v1.
    terms = api.put(
        f"/v1/catalogues/{cat_a['id']}/license",
        json={"rate_per_use_micros": 2500, "threshold": 0.3},
        headers=label_a.headers,
    )
    assert terms.status_code == 200, terms.text
    uses_b = live.get(label_b, "/v1/uses")["items"]
    live.ids = {
        "label_a": label_a,
        "label_b": label_b,
        "company": company,
        "auditor": auditor,
        "catalogue_a": cat_a["id"],
        "catalogue_b": cat_b["id"],
        "tracks_a": tracks_a,
        "track_b": track_b,
        "checks": checks,
        "use_b": uses_b[0]["id"],
        "tenants": tenants,
    }
    try:
        yield live
    finally:
        api.close()
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Browser]:
    """Started after the world is built: Playwright's sync API holds an event loop in this
    thread, and the job runner needs its own."""
    assert sync_playwright is not None
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
            headless=True,
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, timezone_id="Asia/Tokyo")
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page: Page, live: Live, tenant: Tenant) -> None:
    page.goto(f"{live.base}/console/sign-in")
    page.fill("input[name=api_key]", tenant.key)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/console/sign-in" not in page.url, page.content()[:2000]


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def status_of(page: Page, live: Live, path: str) -> int:
    """The status the browser's session gets for a URL typed in."""
    response = page.goto(f"{live.base}{path}")
    assert response is not None
    return response.status


def ingest_pending(live: Live, database_url: str) -> None:
    """Run the ingestion worker until the queue is empty, in a thread: this one holds the
    browser's event loop (Playwright's sync API), and the job runner needs its own."""
    settings: Settings = live.app.state.settings
    engine = create_db_engine(database_url, pool_size=1)
    worker = threading.Thread(target=run_jobs, args=(settings, engine))
    worker.start()
    worker.join(timeout=120)
    engine.dispose()


def period_bounds(page: Page) -> tuple[str, str]:
    """The dashboard's period as the API's [from, to) instants."""
    first = page.input_value("input[name=from]")
    last = page.input_value("input[name=to]")
    end = dt.date.fromisoformat(last) + dt.timedelta(days=1)
    return f"{first}T00:00:00Z", f"{end.isoformat()}T00:00:00Z"


def test_label_dashboard_equals_the_apis_royalties(page: Page, live: Live) -> None:
    label = live.ids["label_a"]
    sign_in(page, live, label)
    assert page.url.endswith("/console/dashboard")
    start, end = period_bounds(page)
    report = live.get(label, "/v1/royalties", **{"from": start, "to": end, "group_by": "day"})
    assert report["total_micros"] > 0
    assert int(page.get_attribute("#total", "data-micros") or "") == report["total_micros"]
    assert int(page.get_attribute("#uses", "data-count") or "") == report["uses"] == 2
    assert f"USD 0.{report['total_micros']:06d}" in page.inner_text("#total")
    bars = page.eval_on_selector_all(
        "svg.chart rect.bar", "els => els.map(e => Number(e.dataset.micros))"
    )
    assert sum(bars) == report["total_micros"]
    assert len(bars) == 30  # one per day of the default period, empty days included
    by_track = live.get(label, "/v1/royalties", **{"from": start, "to": end, "group_by": "track"})
    shown = page.eval_on_selector_all(
        "#top-tracks td[data-micros]", "els => els.map(e => Number(e.dataset.micros))"
    )
    assert sorted(shown) == sorted(r["amount_micros"] for r in by_track["rows"])
    # Dates are converted to the viewer's zone (the browser says Tokyo).
    assert "GMT+9" in page.inner_text("table.uses time") or "JST" in page.inner_text(
        "table.uses time"
    )
    shot(page, "label-dashboard")

    # Another period: nothing earned, the empty states show.
    page.goto(f"{live.base}/console/dashboard?from=2020-01-01&to=2020-01-31")
    assert page.get_attribute("#total", "data-micros") == "0"
    assert page.locator("text=No earnings in this period.").count() == 2
    shot(page, "label-dashboard-empty-period")


def test_label_drills_from_dashboard_to_the_evidence_and_plays_both_passages(
    page: Page, live: Live
) -> None:
    sign_in(page, live, live.ids["label_a"])
    page.click("table.uses a.evidence-link >> nth=0")
    page.wait_for_load_state("networkidle")
    assert "/console/uses/" in page.url
    assert page.locator("svg.timeline g.evidence").count() >= 1
    for player in ("#generated", "#reference"):
        page.wait_for_function(
            "sel => { const a = document.querySelector(sel); return a.readyState >= 1 && "
            "a.duration > 0 }",
            arg=player,
        )
        played = page.evaluate(
            """async sel => {
                const a = document.querySelector(sel);
                a.muted = true;
                await a.play();
                await new Promise(r => setTimeout(r, 400));
                const t = a.currentTime; a.pause();
                return {duration: a.duration, time: t, start: Number(a.dataset.start)};
            }""",
            player,
        )
        assert played["duration"] > 5
        assert played["time"] >= played["start"] - 0.05  # playback starts at the passage
    shot(page, "label-use")

    # The transposed use shows its transposition on the timeline.
    tracks_a = live.ids["tracks_a"]
    page.goto(f"{live.base}/console/tracks/{tracks_a[1]}")
    shot(page, "label-track")
    page.click("a.evidence-link >> nth=0")
    page.wait_for_load_state("networkidle")
    assert "+2 st" in (page.text_content("svg.timeline") or "")
    assert "+2 semitones" in page.inner_text("table.evidence")
    shot(page, "label-use-transposed")


def test_a_label_never_sees_another_labels_objects(page: Page, live: Live) -> None:
    ids = live.ids
    sign_in(page, live, ids["label_a"])
    page.goto(f"{live.base}/console/catalogues")
    assert ids["catalogue_a"] in page.content()
    assert ids["catalogue_b"] not in page.content()
    shot(page, "label-catalogues")
    page.goto(f"{live.base}/console/catalogues/{ids['catalogue_a']}")
    versions = page.locator("table.terms tbody tr")
    assert versions.count() == 2
    assert "USD 0.002500" in versions.nth(0).inner_text()  # the current version first
    assert "USD 0.002000" in versions.nth(1).inner_text()
    assert page.inner_text("[data-status=indexed]") == "2"
    shot(page, "label-catalogue")
    page.goto(f"{live.base}/console/usage")
    assert ids["use_b"] not in page.content()
    assert page.locator("table.uses tbody tr").count() == 2
    shot(page, "label-usage")
    for path in (
        f"/console/catalogues/{ids['catalogue_b']}",
        f"/console/tracks/{ids['track_b']}",
        f"/console/uses/{ids['use_b']}",
        f"/console/audio/tracks/{ids['track_b']}",
        f"/console/audio/checks/{ids['checks']['other']}",
        f"/console/usage?track_id={ids['track_b']}",
        "/console/no-such-page",
    ):
        status = status_of(page, live, path)
        if path.startswith("/console/usage"):
            assert status == 200
            assert page.locator("table.uses tbody tr").count() == 0, path
            assert "No uses yet." in page.content()
        else:
            assert status == 404, path
            assert "Not found" in page.inner_text("h1"), path
            if path.startswith("/console/tracks/"):
                shot(page, "label-not-found")
    # Labels do not read checks in the API either (403), only the uses of their tracks.
    assert status_of(page, live, f"/console/checks/{ids['checks']['plain']}") == 403
    # The label hears the check that used its track, from a byte range on.
    audio = page.request.get(
        f"{live.base}/console/audio/checks/{ids['checks']['plain']}",
        headers={"Range": "bytes=0-99"},
    )
    assert audio.status == 206
    assert audio.headers["content-range"].startswith("bytes 0-99/")
    assert len(audio.body()) == 100


def test_forms_without_the_csrf_token_are_refused(page: Page, live: Live) -> None:
    # The sign-in form itself.
    page.goto(f"{live.base}/console/sign-in")
    refused = page.request.post(
        f"{live.base}/console/sign-in", form={"api_key": live.ids["auditor"].key}
    )
    assert refused.status == 403
    sign_in(page, live, live.ids["auditor"])
    for path in ("/console/ledger/verify", "/console/sign-out"):
        refused = page.request.post(f"{live.base}{path}", form={"x": "1"})
        assert refused.status == 403, path
        forged = page.request.post(f"{live.base}{path}", form={"csrf_token": "forged"})
        assert forged.status == 403, path
    # The session survived the refused sign-out.
    assert status_of(page, live, "/console/usage") == 200


def test_auditor_reads_everything_and_verifies_the_chain(page: Page, live: Live) -> None:
    ids = live.ids
    auditor = ids["auditor"]
    sign_in(page, live, auditor)
    assert page.url.endswith("/console/usage")
    assert page.locator("table.uses tbody tr").count() == 3  # both labels' uses
    page.click("#verify-chain")
    page.wait_for_selector("#verification-result")
    assert page.get_attribute("#verification-result", "data-ok") == "true"
    api = live.get(auditor, "/v1/ledger/verify")
    assert f"{api['transactions_checked']} transactions" in page.inner_text("#verification")
    shot(page, "auditor-usage-verified")
    # The CSV export link: the API's export of the same filters.
    page.goto(f"{live.base}/console/usage?label_id={ids['label_a'].id}")
    assert page.locator("table.uses tbody tr").count() == 2
    href = page.get_attribute("#csv", "href")
    assert href is not None
    csv = page.request.get(live.base + href)
    assert csv.status == 200
    assert len(csv.text().strip().splitlines()) == 3  # header and two uses
    # A check as recorded, with its ledger transaction, postings and hashes.
    check_id = ids["checks"]["plain"]
    page.goto(f"{live.base}/console/checks/{check_id}")
    [tx] = live.get(auditor, "/v1/ledger/transactions", check_id=check_id)["items"]
    text = page.inner_text("main")
    assert tx["hash"] in text
    assert tx["prev_hash"] in text
    assert page.locator(
        f"[data-transaction-id='{tx['id']}'] table.postings tbody tr"
    ).count() == len(tx["postings"])
    assert "Nordic Tapes (label)" in text  # postings name their accounts' owners
    assert "Tune Labs (ai_company)" in text
    result = live.get(auditor, f"/v1/checks/{check_id}")
    assert result["embedder"]["version"] in text
    assert str(result["index_watermark"]) in text
    shot(page, "auditor-check")
    # A label's dashboard, as the auditor sees it, equals the API's report for that label.
    page.goto(f"{live.base}/console/dashboard?label_id={ids['label_a'].id}")
    start, end = period_bounds(page)
    report = live.get(
        auditor, "/v1/royalties", label_id=str(ids["label_a"].id), **{"from": start, "to": end}
    )
    assert int(page.get_attribute("#total", "data-micros") or "") == report["total_micros"]


def test_ai_company_sees_its_checks_balance_and_evidence(page: Page, live: Live) -> None:
    ids = live.ids
    company = ids["company"]
    sign_in(page, live, company)
    assert page.url.endswith("/console/checks")
    account = live.get(company, "/v1/accounts/me")
    assert int(page.get_attribute("#balance", "data-micros") or "") == account["balance_micros"]
    assert account["balance_micros"] < 0
    assert page.locator("table.checks tbody tr").count() == 3
    shot(page, "company-checks")
    page.click(f"tr[data-check-id='{ids['checks']['plain']}'] a")
    page.wait_for_load_state("networkidle")
    assert page.locator("svg.timeline").count() >= 1
    assert page.locator(".transaction").count() == 0  # the ledger's internals are auditors'
    page.wait_for_function(
        "() => { const a = document.querySelector('#check-audio'); return a.duration > 5 }"
    )
    shot(page, "company-check")
    page.click("a.evidence-link >> nth=0")
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        "() => { const a = document.querySelector('#generated'); return a.duration > 0 }"
    )
    assert page.locator("#reference").count() == 0  # the recording is the label's
    shot(page, "company-use")
    assert status_of(page, live, f"/console/audio/tracks/{ids['tracks_a'][0]}") == 403
    assert status_of(page, live, "/console/catalogues") == 403


def test_revoking_the_key_ends_the_session_and_sign_out_ends_it_too(page: Page, live: Live) -> None:
    label = live.ids["label_b"]
    spare = live.api.post("/v1/keys", json={"name": "console"}, headers=label.headers).json()
    tenant = Tenant(label.id, label.kind, spare["key"])
    sign_in(page, live, tenant)
    assert status_of(page, live, "/console/catalogues") == 200
    revoked = live.api.delete(f"/v1/keys/{spare['id']}", headers=label.headers)
    assert revoked.status_code == 200, revoked.text
    page.goto(f"{live.base}/console/catalogues")
    assert "/console/sign-in" in page.url
    # A wrong key shows the error in the page.
    page.fill("input[name=api_key]", "el_label_" + uuid.uuid4().hex)
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.inner_text(".error")
    shot(page, "sign-in-error")
    sign_in(page, live, label)
    page.click("text=Sign out")
    page.wait_for_load_state("networkidle")
    assert "/console/sign-in" in page.url
    assert status_of(page, live, "/console/dashboard") == 200  # the sign-in page again
    assert "/console/sign-in" in page.url
    cookies = page.context.cookies()
    assert not [c for c in cookies if c["name"] == "el_console"]


def test_a_new_label_sees_empty_states(page: Page, live: Live) -> None:
    tenants: Tenants = live.ids["tenants"]
    sign_in(page, live, tenants.label())
    assert "No earnings in this period." in page.content()
    assert "No uses yet." in page.content()
    page.goto(f"{live.base}/console/catalogues")
    assert "No catalogues yet." in page.content()
    shot(page, "label-empty")
    # A malformed filter is an error in the page, not a crash.
    assert status_of(page, live, "/console/dashboard?from=yesterday") == 422
    assert "must be a date" in page.content()


def test_session_cookie_is_httponly_and_strict(page: Page, live: Live) -> None:
    sign_in(page, live, live.ids["label_a"])
    [cookie] = [c for c in page.context.cookies() if c["name"] == "el_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("el_console=") == -1


def test_operator_reads_every_label_and_pages_through_the_usage(page: Page, live: Live) -> None:
    ids = live.ids
    operator = ids["tenants"].operator()
    sign_in(page, live, operator)
    assert page.url.endswith("/console/usage")
    every = live.get(operator, "/v1/uses")["items"]
    assert len(every) == 3
    # One use a page, following the API's cursors: each use once, newest first, as the API.
    page.goto(f"{live.base}/console/usage?per_page=1")
    seen = []
    while True:
        rows = page.locator("table.uses tbody tr")
        assert rows.count() == 1
        seen.append(rows.first.get_attribute("data-use-id"))
        following = page.locator(".pager a.next")
        if following.count() == 0:
            break
        following.click()
        page.wait_for_load_state("networkidle")
        assert page.locator(".pager a.first").count() == 1
    assert seen == [u["id"] for u in every]
    shot(page, "operator-usage-last-page")
    # A label's dashboard, picked from the list of labels.
    page.goto(f"{live.base}/console/dashboard")
    page.click("text=Nordic Tapes")
    page.wait_for_load_state("networkidle")
    start, end = period_bounds(page)
    report = live.get(
        operator, "/v1/royalties", label_id=str(ids["label_a"].id), **{"from": start, "to": end}
    )
    assert int(page.get_attribute("#total", "data-micros") or "") == report["total_micros"]
    assert status_of(page, live, "/console/usage?per_page=1000") == 422


def test_a_pending_track_updates_in_the_page_until_indexed(
    page: Page, live: Live, music: Music, database_url: str
) -> None:
    ids = live.ids
    label = ids["label_a"]
    fresh = upload(live.api, label, ids["catalogue_a"], music.track(14))  # type: ignore[arg-type]
    assert fresh.status_code == 202, fresh.text
    track_id = fresh.json()["id"]
    sign_in(page, live, label)
    page.goto(f"{live.base}/console/catalogues/{ids['catalogue_a']}")
    row = page.locator(f"tr[data-track-id='{track_id}'] .badge").first
    assert row.inner_text() == "pending"
    assert page.inner_text("[data-status=pending]") == "1"
    shot(page, "label-catalogue-pending")
    # The worker indexes it; the page polls and shows the new status without a reload.
    ingest_pending(live, database_url)
    page.wait_for_selector(f"tr[data-track-id='{track_id}'] .badge.indexed", timeout=30_000)
    assert page.inner_text("[data-status=indexed]") == "3"
    assert page.inner_text("[data-status=pending]") == "0"
    swapped = page.inner_text(f"tr[data-track-id='{track_id}'] time")
    assert "GMT+9" in swapped or "JST" in swapped  # localised after the swap too
    shot(page, "label-catalogue-indexed")


def _corrupted(path: Path) -> Path:
    """A file whose header is sound and whose audio stream is not (refused only by decoding)."""
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    path.write_bytes(bytes(data))
    return path


def test_a_label_uploads_tracks_from_the_catalogue_page(
    page: Page, live: Live, database_url: str, tmp_path: Path
) -> None:
    ids = live.ids
    label, tenants = ids["label_a"], ids["tenants"]
    catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
    valid = audio_file(tmp_path, seed=31, seconds=8.0, name="Morning Tide.wav")
    corrupt = _corrupted(audio_file(tmp_path, seed=32, seconds=8.0, fmt="FLAC", name="Reel.flac"))
    not_audio = tmp_path / "liner-notes.mp3"
    not_audio.write_bytes(b"these notes are not audio\n" * 400)
    # What the API answers for the file it refuses at once: the page must say the same.
    refused = upload(live.api, label, catalogue["id"], not_audio)  # type: ignore[arg-type]
    assert refused.status_code == 422, refused.text
    sign_in(page, live, label)
    page.goto(f"{live.base}/console/catalogues/{catalogue['id']}")
    assert "No tracks" in page.inner_text("#tracks")
    page.fill("#uploader input[name=artist]", "Nordic Tapes Ensemble")
    page.set_input_files("#uploader input[type=file]", [str(valid), str(corrupt), str(not_audio)])
    page.click("#uploader button[type=submit]")
    page.wait_for_function(
        "() => { const rows = [...document.querySelectorAll('#uploads li')]; return "
        "rows.length === 3 && rows.every(r => ['done', 'error'].includes(r.dataset.state)) }"
    )
    rows = page.eval_on_selector_all(
        "#uploads li",
        "els => els.map(e => ({file: e.dataset.file, state: e.dataset.state, track: "
        "e.dataset.trackId || null, progress: e.querySelector('progress').value, "
        "text: e.querySelector('.state').textContent}))",
    )
    by_file = {r["file"]: r for r in rows}
    for name in (valid.name, corrupt.name):
        assert by_file[name]["state"] == "done", by_file[name]
        assert by_file[name]["progress"] == 100
        assert by_file[name]["text"] == "uploaded: pending"
    assert by_file[not_audio.name]["state"] == "error"
    assert by_file[not_audio.name]["track"] is None
    assert by_file[not_audio.name]["text"] == refused.json()["error"]["message"]
    valid_id, corrupt_id = by_file[valid.name]["track"], by_file[corrupt.name]["track"]
    # The new tracks appear in the list, pending, without a reload.
    page.wait_for_selector(f"tr[data-track-id='{valid_id}'] .badge.pending")
    page.wait_for_selector(f"tr[data-track-id='{corrupt_id}'] .badge.pending")
    page.wait_for_function(
        "() => document.querySelector('[data-status=pending]').textContent === '2'"
    )
    assert page.locator("#tracks").count() == 1
    api_tracks = live.get(label, f"/v1/catalogues/{catalogue['id']}/tracks")["items"]
    assert {t["id"] for t in api_tracks} == {valid_id, corrupt_id}
    assert {t["title"] for t in api_tracks} == {"Morning Tide", "Reel"}
    assert {t["artist"] for t in api_tracks} == {"Nordic Tapes Ensemble"}
    shot(page, "label-catalogue-uploaded")
    # The worker ingests them; the page polls until one is indexed and the other failed,
    # with its reason.
    ingest_pending(live, database_url)
    page.wait_for_selector(f"tr[data-track-id='{valid_id}'] .badge.indexed", timeout=30_000)
    page.wait_for_selector(f"tr[data-track-id='{corrupt_id}'] .badge.failed", timeout=30_000)
    reason = page.inner_text(f"tr[data-track-id='{corrupt_id}'] .error")
    assert reason == live.get(label, f"/v1/tracks/{corrupt_id}")["error"]
    assert "corrupt" in reason
    # The uploader's rows follow their tracks too.
    page.wait_for_selector(f"#uploads li[data-track-id='{corrupt_id}'][data-track-status=failed]")
    assert page.inner_text(f"#uploads li[data-track-id='{valid_id}'] .state") == (
        "uploaded: indexed"
    )
    assert reason in page.inner_text(f"#uploads li[data-track-id='{corrupt_id}'] .state")
    shot(page, "label-catalogue-upload-ingested")

    # The route itself: the CSRF token is required, another label's catalogue is not found.
    csrf = page.get_attribute("#uploader", "data-csrf")
    assert csrf
    route = f"{live.base}/console/catalogues/{catalogue['id']}/tracks"
    fresh = audio_file(tmp_path, seed=33, seconds=8.0)
    files = {
        "file": {"name": fresh.name, "mimeType": "audio/wav", "buffer": fresh.read_bytes()},
        "title": "Unsent",
        "artist": "Nobody",
    }
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        refused_csrf = page.request.post(route, multipart=files, headers=headers)
        assert refused_csrf.status == 403, headers
        assert refused_csrf.json()["error"]["code"] == "csrf_rejected"
    stored = live.get(label, f"/v1/catalogues/{catalogue['id']}/tracks")["items"]
    assert len(stored) == 2  # nothing stored
    foreign = page.request.post(
        f"{live.base}/console/catalogues/{ids['catalogue_b']}/tracks",
        multipart=files,
        headers={"X-CSRF-Token": csrf},
    )
    assert foreign.status == 404, foreign.text()
    theirs = live.get(ids["label_b"], f"/v1/catalogues/{ids['catalogue_b']}/tracks")["items"]
    assert len(theirs) == 1
    # An AI company uploads nothing, through the console or the API.
    page.click("text=Sign out")
    page.wait_for_load_state("networkidle")
    sign_in(page, live, ids["company"])
    company_csrf = page.input_value("form.who input[name=csrf_token]")
    denied = page.request.post(route, multipart=files, headers={"X-CSRF-Token": company_csrf})
    assert denied.status == 403, denied.text()
    assert len(live.get(label, f"/v1/catalogues/{catalogue['id']}/tracks")["items"]) == 2


def test_a_mixs_quieter_source_shows_it_was_paid_beside_the_louder_one(
    page: Page, live: Live, music: Music, database_url: str
) -> None:
    """A catalogue asks 0.95; the quieter source of a mix is paid under it, and the check's
    page says why: it was heard beside a stronger use, judged by the scaled threshold."""
    tenants = live.ids["tenants"]
    label = tenants.create("label", "Quiet Records")
    company = tenants.create("ai_company", "Mix Labs")
    catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.95)
    loud_path = music.write(
        "console-21", lambda: melody_track(21, seconds=30.0, sr=SR, timbre="piano")
    )
    quiet_path = music.write(
        "console-22", lambda: melody_track(22, seconds=30.0, sr=SR, timbre="flute")
    )
    for path in (loud_path, quiet_path):
        assert upload(live.api, label, catalogue["id"], path).status_code == 202  # type: ignore[arg-type]
    ingest_pending(live, database_url)

    def part(seed: int, timbre: str, start: float) -> Any:
        return melody_track(seed, seconds=start + 15.0, sr=SR, timbre=timbre)[int(start * SR) :]

    loud, quiet = part(21, "piano", 3.0), part(22, "flute", 10.0)
    n = min(len(loud), len(quiet))
    mix = music.write("console-mix-21-22", lambda: 0.5 * (loud[:n] + 10 ** (-12 / 20) * quiet[:n]))
    answer = submit_check(live.api, company, mix)  # type: ignore[arg-type]
    assert answer.status_code == 201, answer.text
    result = answer.json()
    beside = [m for m in result["matches"] if m["beside_use"]]
    assert len(beside) == 1, result["matches"]
    assert beside[0]["is_use"] is True
    assert beside[0]["threshold"] < 0.95

    sign_in(page, live, company)
    page.goto(f"{live.base}/console/checks/{result['id']}")
    matches = page.locator("article.match")
    assert matches.count() == 2
    paid_beside = page.locator("article.match", has_text="beside a stronger use")
    assert paid_beside.count() == 1
    assert paid_beside.locator(".badge.indexed").inner_text() == "use"
    text = paid_beside.inner_text()
    assert f"threshold {beside[0]['threshold']}" in text
    assert "scaled for another source of a mix" in text
    assert "spurious match beside a true use" in text
    shot(page, "company-check-mix-beside")

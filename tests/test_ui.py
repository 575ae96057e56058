"""The event explorer in a real browser: headless Chromium (Playwright) against a real server holding the demo run.

Every page is checked against what :func:`meshlog.demo.write_demo` wrote: the overview's counts, the events list's
filters, pages and live tail, an event's JSON, the list of traces (against what the store sums up), the trace's
waterfall, a stream's replay, the lineage graph, the
instance registry, the token form of a server with API tokens, phone width and keyboard navigation. No page may
raise a script error or break the Content-Security-Policy.

Chromium is Debian's (/usr/bin/chromium; Playwright never downloads one). Without it these tests skip, except
under ``CI=true``, where that is a failure. ``MESHLOG_UI_SCREENSHOTS=docs/img`` also writes the screenshots of
docs/ui.md (``test_screenshots``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import meshlog
from meshlog.demo import DemoSummary, write_demo
from meshlog.stats import is_failure_type
from server_helpers import running_server

sync_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 5000
"""Milliseconds Playwright waits for a page to show something (a ceiling, not an expectation)."""
INSTANCE = "odin"
REVIEW = "review-1"

if not CHROMIUM.exists() and os.environ.get("CI", "").lower() != "true":
    pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package); required under CI=true", allow_module_level=True)


@dataclass(frozen=True)
class Site:
    base: str
    demo: DemoSummary


@dataclass(frozen=True)
class Runs:
    """A server holding several demo runs and a review trace of an agent of its own."""

    base: str
    url: str
    demos: tuple[DemoSummary, ...]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'demo.db'}"
    with meshlog.connect(url) as log:
        demo = write_demo(log)
    with running_server(url) as base:
        httpx.post(f"{base}/v1/instances", json={"id": INSTANCE, "name": "Odin", "project": "api"}).raise_for_status()
        yield Site(base, demo)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui-runs') / 'runs.db'}"
    with meshlog.connect(url) as log:
        demos = tuple(write_demo(log) for _ in range(3))
        call = log.emit("llm.call", {"model": "gpt-4o-mini"}, agent_id="reviewer", trace_id=REVIEW)
        log.emit("llm.response", {"total_tokens": 120}, agent_id="reviewer", trace_id=REVIEW, parent_id=call.id)
        log.emit("review.failed", {"reason": "missing tests"}, agent_id="reviewer", trace_id=REVIEW)
    with running_server(url) as base:
        yield Runs(base, url, demos)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page at 1280x800 that fails the test on a script error or a Content-Security-Policy violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    page.on("console", on_console)
    yield page
    context.close()
    assert problems == []


def goto(page: Page, site: Site | Runs, route: str) -> None:
    page.goto(f"{site.base}/{route}")
    expect(page.locator("main")).not_to_have_attribute("aria-busy", "true", timeout=WAIT)


def first(site: Site, type_: str) -> Any:
    return next(e for e in site.demo.events if e.type == type_)


# -- overview -----------------------------------------------------------------------------------------------------
def test_overview_counts_what_the_demo_wrote(page: Page, site: Site) -> None:
    goto(page, site, "#/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    stats = httpx.get(f"{site.base}/v1/stats").json()
    expect(page.locator("#stat-total .value")).to_have_text(f"{stats['total']:,}")
    expect(page.locator("#stat-failures .value")).to_have_text("2")
    expect(page.locator("#stat-agents .value")).to_have_text(str(len(site.demo.agents)))
    expect(page.locator("#stat-active .value")).to_have_text("1")
    llm_row = page.locator("#by-type tr", has=page.get_by_role("link", name="llm.call", exact=True))
    expect(llm_row.locator("td.num")).to_have_text(str(site.demo.llm_calls))
    for agent in site.demo.agents:
        count = sum(1 for e in site.demo.events if e.agent_id == agent)
        row = page.locator("#by-agent tr", has=page.get_by_role("link", name=agent, exact=True))
        expect(row.locator("td.num")).to_have_text(str(count))
    failures = page.locator("#failures tbody th")
    expect(failures).to_have_text(["llm.error", "task.result.failure"], ignore_case=False)
    assert page.locator("svg.bar-chart a").count() == len(stats["timeline"])

    # a number is a link to the events it counts
    llm_row.locator("td.num a").click()
    expect(page.locator("#events-table tbody tr")).to_have_count(site.demo.llm_calls, timeout=WAIT)
    assert "type=llm.call" in page.url


# -- events -------------------------------------------------------------------------------------------------------
def test_filters_change_the_list(page: Page, site: Site) -> None:
    goto(page, site, "#/events")
    rows = page.locator("#events-table tbody tr")
    expect(rows.first).to_be_visible()
    page.get_by_label("Type", exact=True).fill("llm.call")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(site.demo.llm_calls, timeout=WAIT)
    expect(rows.locator("a.type")).to_have_text(["llm.call"] * site.demo.llm_calls)
    expect(page.locator("#page-info")).to_contain_text(f"of {site.demo.llm_calls}")

    page.get_by_label("Agent").fill("test-runner")
    page.get_by_role("button", name="Apply").click()
    test_runner_calls = sum(1 for e in site.demo.events if e.type == "llm.call" and e.agent_id == "test-runner")
    expect(rows).to_have_count(test_runner_calls, timeout=WAIT)
    assert "agent_id=test-runner" in page.url

    goto(page, site, "#/events?text=timeout")
    found = httpx.get(f"{site.base}/v1/events", params={"text": "timeout", "order": "desc"}).json()["events"]
    assert {"llm.error", "task.result.failure"} <= {e["type"] for e in found}
    expect(rows.locator("a.type")).to_have_text([e["type"] for e in found], timeout=WAIT)


def test_pagination_with_previous(page: Page, site: Site) -> None:
    goto(page, site, f"#/events?trace_id={site.demo.trace_id}&order=asc&limit=10")
    rows = page.locator("#events-table tbody tr")
    positions = [e.position for e in site.demo.events]
    expect(rows.first).to_have_attribute("data-position", str(positions[0]))
    expect(rows).to_have_count(10)
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.get_by_role("button", name="Next →").click()
    expect(rows.first).to_have_attribute("data-position", str(positions[10]), timeout=WAIT)
    expect(page.locator("#page-info")).to_contain_text("Events 11\u201320")
    page.get_by_role("button", name="Next →").click()
    expect(rows.first).to_have_attribute("data-position", str(positions[20]), timeout=WAIT)
    page.get_by_role("button", name="← Previous").click()
    expect(rows.first).to_have_attribute("data-position", str(positions[10]), timeout=WAIT)
    page.get_by_role("button", name="← Previous").click()
    expect(rows.first).to_have_attribute("data-position", str(positions[0]), timeout=WAIT)
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()


def test_live_tail_shows_a_new_event(page: Page, site: Site) -> None:
    goto(page, site, "#/events?type=ui.probe")
    page.get_by_label("Live tail").check()
    expect(page.locator("#live-state")).to_have_text("● live", timeout=WAIT)
    response = httpx.post(f"{site.base}/v1/events", json={"type": "ui.probe", "data": {"n": 1}, "agent_id": "probe"})
    position = response.json()["event"]["position"]
    row = page.locator(f"#events-table tbody tr[data-position='{position}']")
    expect(row).to_be_visible(timeout=1000)
    expect(row.locator("a.type")).to_have_text("ui.probe")
    # a second one lands on top, and an event of another type does not show
    httpx.post(f"{site.base}/v1/events", json={"type": "ui.other", "data": {}})
    second = httpx.post(f"{site.base}/v1/events", json={"type": "ui.probe", "data": {"n": 2}}).json()["event"]
    expect(page.locator("#events-table tbody tr").first).to_have_attribute(
        "data-position", str(second["position"]), timeout=1000
    )
    expect(page.locator("#events-table tbody tr")).to_have_count(2)


def test_live_tail_applies_the_text_filter(page: Page, site: Site) -> None:
    goto(page, site, "#/events?text=Needle-7")
    page.get_by_label("Live tail").check()
    expect(page.locator("#live-state")).to_have_text("● live", timeout=WAIT)
    httpx.post(f"{site.base}/v1/events", json={"type": "ui.hay", "data": {"note": "no match", "needle-7": 1}})
    found = httpx.post(f"{site.base}/v1/events", json={"type": "ui.hay", "data": {"note": "a NEEDLE-7 here"}})
    row = page.locator(f"#events-table tbody tr[data-position='{found.json()['event']['position']}']")
    expect(row).to_be_visible(timeout=1000)
    expect(page.locator("#events-table tbody tr")).to_have_count(1)  # a key is not searched, as in the server


def test_event_page_shows_json_and_links(page: Page, site: Site) -> None:
    call = first(site, "llm.call")
    goto(page, site, f"#/events/{call.id}")
    expect(page.get_by_role("heading", name="llm.call", level=1)).to_be_visible()
    assert json.loads(page.locator("#payload pre").inner_text()) == call.data
    expect(page.get_by_role("link", name="Trace waterfall")).to_have_attribute("href", f"#/traces/{call.trace_id}")
    expect(page.get_by_role("link", name="Lineage graph")).to_have_attribute("href", f"#/lineage/{call.id}")
    stream_link = page.locator("main .actions").get_by_role("link", name="Stream at this version")
    expect(stream_link).to_have_attribute("href", f"#/streams/{quote(call.stream, safe='')}?version=2")
    expect(page.locator("#children tbody tr")).to_have_count(1)  # its llm.response
    expect(page.locator("#outcome")).to_contain_text("No outcome recorded.")


def test_data_is_shown_as_text(page: Page, site: Site) -> None:
    hostile = "<img id=xss src=x onerror=alert(1)><b>bold</b>"
    event = httpx.post(
        f"{site.base}/v1/events",
        json={
            "type": "ui.html",
            "data": {"html": hostile, "user_intent": {"goal": "<i>see</i> it"}},
            "agent_id": "<script>",
        },
    ).json()["event"]
    goto(page, site, f"#/events/{event['id']}")
    expect(page.locator("#payload pre")).to_contain_text(hostile)
    expect(page.locator("#intent")).to_contain_text("<i>see</i> it")
    assert page.locator("#xss").count() == 0
    assert page.locator("main b, main i, main script").count() == 0


def test_outcome_and_intent(page: Page, site: Site) -> None:
    result = first(site, "task.result")
    httpx.post(f"{site.base}/v1/events/{result.id}/outcome", json={"outcome": {"status": "merged", "pr": 42}})
    goto(page, site, f"#/events/{result.id}")
    assert json.loads(page.locator("#outcome pre").inner_text()) == {"status": "merged", "pr": 42}


# -- traces -------------------------------------------------------------------------------------------------------
def test_traces_page_lists_what_the_store_holds(page: Page, runs: Runs) -> None:
    goto(page, runs, "#/traces")
    expect(page.get_by_role("heading", name="Traces", level=1)).to_be_visible()
    expect(page.locator("#nav a[aria-current='page']")).to_have_text("Traces")
    with meshlog.connect(runs.url) as log:
        held = log.traces()  # the last hour, as the page asks
    assert len(held) == len(runs.demos) + 1 and held[0].trace_id == REVIEW  # written last
    by_id = {t.trace_id: t for t in held}
    for demo in runs.demos:
        summary = by_id[demo.trace_id]
        assert (summary.events, summary.llm_calls, summary.failures) == (demo.events_written, demo.llm_calls, 2)
        assert summary.tokens == demo.llm_tokens
        assert summary.agents == tuple(sorted(demo.agents))
    rows = page.locator("#traces-table tbody tr")
    expect(rows).to_have_count(len(held))
    assert [r.get_attribute("data-trace") for r in rows.all()] == [t.trace_id for t in held]
    for row, summary in zip(rows.all(), held, strict=True):
        expect(row.locator("[data-count='events']")).to_have_text(f"{summary.events:,}")
        expect(row.locator("[data-count='llm_calls']")).to_have_text(f"{summary.llm_calls:,}")
        expect(row.locator("[data-count='tokens']")).to_have_text(f"{summary.tokens:,}")
        expect(row.locator("[data-count='failures']")).to_have_text(f"{summary.failures:,}")
        expect(row.locator("td.agents a")).to_have_text(list(summary.agents))
    expect(page.locator("#traces-note")).to_contain_text(f"{len(held)} traces")

    # the agent filter, from the keyboard
    field = page.get_by_label("Agent", exact=True)
    field.fill("reviewer")
    field.press("Enter")
    expect(rows).to_have_count(1, timeout=WAIT)
    expect(rows.first).to_have_attribute("data-trace", REVIEW)
    expect(rows.first.locator("[data-count='failures']")).to_have_text("1")
    assert "agent_id=reviewer" in page.url
    page.get_by_role("link", name="15 minutes").click()  # another window keeps the agent
    expect(page.get_by_role("link", name="15 minutes")).to_have_attribute("aria-current", "true", timeout=WAIT)
    assert "agent_id=reviewer" in page.url and "window=15m" in page.url
    page.get_by_role("link", name="Any agent").click()
    expect(rows).to_have_count(len(held), timeout=WAIT)

    # the numbers link to the events they count, the trace to its waterfall
    demo = runs.demos[-1]
    row = page.locator(f"#traces-table tr[data-trace='{demo.trace_id}']")
    row.locator("[data-count='llm_calls'] a").click()
    expect(page.locator("#events-table tbody tr")).to_have_count(demo.llm_calls, timeout=WAIT)
    assert f"trace_id={demo.trace_id}" in page.url and "type=llm.call" in page.url
    page.go_back()
    row = page.locator(f"#traces-table tr[data-trace='{demo.trace_id}']")
    row.get_by_role("link", name=demo.trace_id, exact=True).click()
    expect(page.get_by_role("heading", name=f"Trace {demo.trace_id}")).to_be_visible(timeout=WAIT)
    expect(page.locator("#waterfall li[data-kind='llm']")).to_have_count(demo.llm_calls)


def test_traces_page_is_reached_from_the_overview_and_opens_a_trace_by_id(page: Page, runs: Runs) -> None:
    goto(page, runs, "#/?window=6h")
    page.get_by_role("link", name="Recent traces").click()
    expect(page.get_by_role("heading", name="Traces", level=1)).to_be_visible(timeout=WAIT)
    expect(page.get_by_role("link", name="6 hours")).to_have_attribute("aria-current", "true")
    field = page.get_by_label("Trace id", exact=True)
    field.fill(REVIEW)
    field.press("Enter")
    expect(page.get_by_role("heading", name=f"Trace {REVIEW}")).to_be_visible(timeout=WAIT)
    page.get_by_role("link", name="Recent traces").click()
    expect(page.locator("#traces-table tbody tr")).to_have_count(len(runs.demos) + 1, timeout=WAIT)

    goto(page, runs, "#/traces?agent_id=nobody")
    expect(page.locator("#no-traces")).to_contain_text("No trace of nobody in the last hour.")
    expect(page.locator("#no-traces a")).to_have_text("Look at the last 7 days")


# -- trace --------------------------------------------------------------------------------------------------------
def test_waterfall_shows_the_llm_calls_in_order(page: Page, site: Site) -> None:
    goto(page, site, f"#/traces/{site.demo.trace_id}")
    calls = [e for e in site.demo.events if e.type == "llm.call"]
    rows = page.locator("#waterfall li[data-kind='llm']")
    expect(rows).to_have_count(len(calls))
    expect(rows.locator(".name")).to_have_text([str(c.data["model"]) for c in calls])
    assert [r.get_attribute("data-id") for r in rows.all()] == [c.id for c in calls]
    offsets = [float(r.get_attribute("data-offset") or "nan") for r in rows.all()]
    assert offsets == sorted(offsets)
    errors = page.locator("#waterfall li.status-error[data-kind='llm']")
    expect(errors).to_have_count(1)  # test-runner's timeout
    expect(errors.locator(".meta")).to_have_text("30 s")
    total_tokens = site.demo.llm_tokens
    expect(page.locator("main dl.inline")).to_contain_text(f"{total_tokens:,}")

    rows.first.locator("button.label").click()
    details = rows.first.locator(".span-details")
    expect(details).to_be_visible()
    expect(details).to_contain_text("912 in + 388 out = 1,300")
    expect(details).to_contain_text("stop")
    errors.locator("button.label").click()
    expect(errors.locator(".span-details")).to_contain_text("no response within 30 s")


# -- stream -------------------------------------------------------------------------------------------------------
def test_stream_timeline_state_and_replay(page: Page, site: Site) -> None:
    task = site.demo.retried_task
    events = [e for e in site.demo.events if e.stream == task.stream]
    goto(page, site, f"#/streams/{quote(task.stream, safe='')}")
    expect(page.get_by_role("heading", name=task.stream, level=1)).to_be_visible()
    expect(page.locator("#timeline li")).to_have_count(len(events))
    counts = page.locator("#state-counts tr", has=page.get_by_role("rowheader", name="llm.call", exact=True))
    expect(counts.locator("td")).to_have_text("2")
    resume = httpx.get(f"{site.base}/v1/streams/{quote(task.stream, safe='')}/resume").json()
    expect(page.locator("#resume .suggestion")).to_have_text(resume["suggestion"]["text"])

    page.get_by_label("Replay to version").fill("3")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#version-note")).to_contain_text("after version 3", timeout=WAIT)
    expect(page.locator("#timeline li.after")).to_have_count(len(events) - 3)
    expect(page.locator("#state-counts tbody tr")).to_have_count(len({e.type for e in events[:3]}))


# -- lineage ------------------------------------------------------------------------------------------------------
def test_lineage_navigation(page: Page, site: Site) -> None:
    call = first(site, "llm.call")
    request = first(site, "user.request")
    goto(page, site, f"#/lineage/{call.id}?depth=1")
    expect(page.locator("svg.lineage a.node.start")).to_have_attribute("data-id", call.id)
    expect(page.locator("#n-parents li")).to_have_text(re.compile(r"^user\.request"))
    expect(page.locator("#n-children li")).to_have_text(re.compile(r"^llm\.response"))
    page.locator(f"svg.lineage a.node[data-id='{request.id}']").click()
    expect(page.get_by_role("heading", name="Lineage of user.request")).to_be_visible(timeout=WAIT)
    expect(page.locator("svg.lineage a.node.start")).to_have_attribute("data-id", request.id)
    children = [e for e in site.demo.events if e.parent_id == request.id]
    expect(page.locator("#n-children li")).to_have_count(len(children))
    # and by keyboard: the graph's nodes are links
    node = page.locator(f"svg.lineage a.node[data-id='{call.id}']")
    node.focus()
    page.keyboard.press("Enter")
    expect(page.locator("svg.lineage a.node.start")).to_have_attribute("data-id", call.id, timeout=WAIT)


def test_a_wide_lineage_draws_the_nearest_events(page: Page, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wide.db'}"
    with meshlog.connect(url) as log:
        root = log.emit("fan.out")
        log.emit_batch([meshlog.NewEvent(type="fan.step", data={"n": n}, parent_id=root.id) for n in range(250)])
    with running_server(url) as base:
        page.goto(f"{base}/#/lineage/{root.id}?depth=1")
        expect(page.locator("svg.lineage a.node.start")).to_have_attribute("data-id", root.id, timeout=WAIT)
        expect(page.locator("svg.lineage a.node")).to_have_count(200)
        expect(page.get_by_text(re.compile("The 200 nearest events within 1 hop"))).to_be_visible()


# -- instances ----------------------------------------------------------------------------------------------------
def test_instances_page(page: Page, site: Site) -> None:
    goto(page, site, "#/instances")
    row = page.locator(f"#instances-table tr[data-id='{INSTANCE}']")
    expect(row).to_have_attribute("data-status", "active")
    expect(row.locator(".badge")).to_have_text("active")
    expect(row).to_contain_text(re.compile(r"just now|\d+ s ago"))
    row.get_by_role("link", name="Odin", exact=True).click()
    expect(page.get_by_role("heading", name=f"instance:{INSTANCE}", level=1)).to_be_visible(timeout=WAIT)
    expect(page.locator("#timeline li")).to_have_count(1)  # instance_registered

    goto(page, site, "#/instances?status=closed")
    expect(page.locator("main")).to_contain_text("No instance registered with status closed.")


# -- tokens -------------------------------------------------------------------------------------------------------
def test_token_prompt_and_tenant(browser: Browser, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    with meshlog.connect(url, tenant="team-a") as log:
        mine = write_demo(log)
        token, _ = log.create_token("write", name="ui test")
    with meshlog.connect(url, tenant="team-b") as other:
        theirs = write_demo(other)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        with running_server(url) as base:
            page.goto(f"{base}/#/events")
            expect(page.get_by_role("heading", name="API token needed")).to_be_visible(timeout=WAIT)
            field = page.get_by_label("Token")
            expect(field).to_be_focused()
            field.fill("mlk_0000000000000000_" + "x" * 43)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("refused", timeout=WAIT)

            page.get_by_label("Token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            rows = page.locator("#events-table tbody tr")
            expect(rows).to_have_count(mine.events_written, timeout=WAIT)
            assert page.evaluate("sessionStorage.getItem('meshlog.token')") == token
            expect(page.get_by_role("link", name=mine.trace_id).first).to_be_visible()
            expect(page.get_by_role("link", name=theirs.trace_id)).to_have_count(0)

            # the live tail sends the token too (read with fetch(), as EventSource cannot send headers)
            page.get_by_label("Live tail").check()
            expect(page.locator("#live-state")).to_have_text("● live", timeout=WAIT)
            auth = {"Authorization": f"Bearer {token}"}
            new = httpx.post(f"{base}/v1/events", json={"type": "ui.mine"}, headers=auth).json()["event"]
            expect(rows.first).to_have_attribute("data-position", str(new["position"]), timeout=WAIT)
            expect(rows.first.locator("a.type")).to_have_text("ui.mine")

            page.goto(f"{base}/#/")  # a reload keeps the token of this tab
            expect(page.locator("#stat-total .value")).to_have_text(str(mine.events_written + 1), timeout=WAIT)

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="API token needed")).to_be_visible(timeout=WAIT)
            assert page.evaluate("sessionStorage.getItem('meshlog.token')") is None
    finally:
        context.close()


# -- layout and keyboard ------------------------------------------------------------------------------------------
def test_phone_width_has_no_horizontal_overflow(browser: Browser, site: Site) -> None:
    call = first(site, "llm.call")
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    try:
        for route in (
            "#/",
            "#/events",
            f"#/events/{call.id}",
            f"#/traces/{site.demo.trace_id}",
            "#/traces",
            f"#/streams/{quote(site.demo.retried_task.stream, safe='')}",
            f"#/lineage/{call.id}",
            "#/instances",
            "#/streams",
        ):
            goto(page, site, route)
            expect(page.locator("main h1")).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{route} is {width} px wide"
    finally:
        context.close()


def test_keyboard_reaches_the_navigation(page: Page, site: Site) -> None:
    goto(page, site, "#/")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#nav') !== null"):
            break
    else:
        pytest.fail("Tab never reached the main navigation")
    expect(page.locator("#nav a:focus")).to_have_text("Overview")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible(timeout=WAIT)
    expect(page.locator("#nav a[aria-current='page']")).to_have_text("Events")
    goto(page, site, "#/instances")
    page.reload()  # a fresh load: the focus starts at the top of the page
    expect(page.get_by_role("heading", name="Instances", level=1)).to_be_visible(timeout=WAIT)
    page.keyboard.press("Tab")  # the first stop skips to the page's content
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    assert page.url.endswith("#/instances")
    outline = page.evaluate(
        "(() => { const a = document.querySelector('#nav a'); a.focus(); return getComputedStyle(a).outlineStyle; })()"
    )
    assert outline != "none"  # a visible focus ring


def test_failures_are_marked_as_the_server_counts_them(page: Page, site: Site) -> None:
    types = [
        "llm.error", "task.result.failure", "deployment_failed", "Deploy-Failed", "build/FAILED", "error",
        "error_occurred", "tool:error", "llm.call", "llm.response", "errors", "failure", "task.failures", "",
    ]  # fmt: skip
    goto(page, site, "#/")
    marked = page.evaluate(
        "async (types) => { const dom = await import('/ui/dom.js'); return types.map((t) => dom.isFailure(t)); }",
        types,
    )
    assert marked == [is_failure_type(kind) for kind in types]
    assert marked.count(True) == 8


def test_files_are_served_with_a_strict_policy(site: Site) -> None:
    index = httpx.get(f"{site.base}/")
    assert index.status_code == 200
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert "<script>" not in index.text and "style=" not in index.text
    for asset in re.findall(r'(?:src|href)="(ui/[^"]+)"', index.text):
        assert httpx.get(f"{site.base}/{asset}").status_code == 200, asset
    for script in Path(meshlog.__file__).parent.joinpath("server", "ui").rglob("*.js"):
        text = script.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, script.name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), script.name  # nothing from elsewhere


# -- screenshots for docs/ui.md -----------------------------------------------------------------------------------
SHOTS = os.environ.get("MESHLOG_UI_SCREENSHOTS")


@pytest.mark.skipif(not SHOTS, reason="set MESHLOG_UI_SCREENSHOTS=docs/img to write the screenshots of docs/ui.md")
def test_screenshots(browser: Browser, site: Site, runs: Runs) -> None:
    out = Path(SHOTS or ".")
    out.mkdir(parents=True, exist_ok=True)
    for instance_id, project, host in (("freya", "api", "dev-2"), ("loki", "web", "ci-7")):
        body = {"id": instance_id, "name": instance_id.title(), "project": project, "host": host}
        httpx.post(f"{site.base}/v1/instances", json=body).raise_for_status()
    httpx.post(f"{site.base}/v1/instances/loki/close", json={"reason": "done"}).raise_for_status()
    failure = first(site, "task.result.failure")
    retry = first(site, "task.retry")
    shots = {
        "ui-overview": "#/",
        "ui-events": "#/events?limit=20",
        "ui-event": f"#/events/{failure.id}",
        "ui-trace": f"#/traces/{site.demo.trace_id}",
        "ui-stream": f"#/streams/{quote(site.demo.retried_task.stream, safe='')}?version=5",
        "ui-lineage": f"#/lineage/{retry.id}?depth=2",
        "ui-instances": "#/instances",
    }
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    for name, route in shots.items():
        goto(page, site, route)
        page.mouse.move(0, 0)
        page.screenshot(path=str(out / f"{name}.png"))
    goto(page, runs, "#/traces")  # several runs
    page.mouse.move(0, 0)
    page.screenshot(path=str(out / "ui-traces.png"))
    context.close()
    phone = browser.new_context(viewport={"width": 375, "height": 800}, device_scale_factor=2)
    page = phone.new_page()
    goto(page, site, f"#/traces/{site.demo.trace_id}")
    page.screenshot(path=str(out / "ui-phone.png"))
    phone.close()

"""The web console in a real browser (Playwright driving Debian's Chromium) against the whole local stack."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared import cli
from shared.bootstrap import get_platform
from shared.localhost.host import LocalHost
from shared.localhost.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "build/samples"
ARTIFACTS = REPO / "build/artifacts/console"
CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by the Makefile (no Playwright browser download)
FINISHED = ("succeeded", "partially_succeeded", "failed", "rejected", "cancelled")

sync_api = pytest.importorskip("playwright.sync_api")


def tenant_key(tenant_id: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["tenants", "create", tenant_id, "--json"]) == 0, printed.getvalue()
    return str(json.loads(printed.getvalue())["apiKey"])


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: run `make test` (its chromium stamp installs Debian's package)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root in a container, where Chromium's sandbox cannot start.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser: sync_api.Browser) -> Iterator[tuple[sync_api.Page, list[str], list[str]]]:
    """A fresh page that records every request leaving loopback (and aborts it) and every console error."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    problems: list[str] = []

    def guard(route: sync_api.Route) -> None:
        if is_loopback(route.request.url) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    new_page = context.new_page()
    new_page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    new_page.on("pageerror", lambda err: problems.append(str(err)))
    try:
        yield new_page, outside, problems
    finally:
        context.close()


def console_url(stack: LocalHost) -> str:
    """The console sits beside the API (`.../api`), at the host's root: `/console`."""
    return stack.api_url.removesuffix("/api") + "/console"


def sign_in(page: sync_api.Page, stack: LocalHost, key: str) -> None:
    page.goto(console_url(stack))
    page.fill("#api-key", key)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#upload-form")


def submit_through_page(
    page: sync_api.Page, model: str, sample: Path, metadata: str = "", *, until_finished: bool = True
) -> str:
    page.select_option("#upload-model", model)
    page.set_input_files("#upload-file", str(sample))
    page.fill("#upload-metadata", metadata)
    page.click("#upload-form button[type=submit]")
    # The job's page once its job appears (the page's CSP forbids eval: no wait_for_function with a string).
    page.locator("#job-head [data-status]").wait_for(timeout=120_000)
    if not until_finished:
        return page.url.rsplit("/", 1)[1]
    finished = re.compile("^(" + "|".join(FINISHED) + ")$")
    sync_api.expect(page.locator("#job-head [data-status]")).to_have_attribute("data-status", finished, timeout=180_000)
    page.locator("#job-head[data-settled]").wait_for()  # its results, chart and drift drawn too
    return page.url.rsplit("/", 1)[1]


def test_sign_in_submit_watch_chart_and_drift(
    stack: LocalHost, page: tuple[sync_api.Page, list[str], list[str]]
) -> None:
    view, outside, problems = page
    key = tenant_key("console-a")
    api = httpx.Client(base_url=stack.api_url.removesuffix("/api"), headers={"Authorization": f"Bearer {key}"})
    hook = WebhookReceiver().__enter__()
    try:
        answer = api.post("/api/v1/subscriptions", json={"endpointUrl": hook.url})
        assert answer.status_code == 201, answer.text
        hook.answer_status = 400  # not retried: the job's event goes straight to the dead letters
        walk_through(stack, view, api, key, hook, answer.json()["subscriptionId"])
    finally:
        hook.__exit__(None, None, None)
        api.close()
    assert outside == []
    assert problems == []


def inked_pixels(view: sync_api.Page, selector: str) -> int:
    """How many pixels of a canvas are drawn on (not transparent)."""
    return int(
        view.evaluate(
            """(selector) => { const c = document.querySelector(selector);
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""",
            selector,
        )
    )


def a_feature_without_rows_shows_no_number(view: sync_api.Page, job_id: str) -> None:
    """A feature no record carried has value null (CONTRACT: nothing to judge). The page shows a dash, not 0.0000
    (which reads as p = 0, the most drifted there is), no verdict, and no bar. The job is real; only its answer
    has the first feature's value taken away, as the API answers for a feature without rows."""

    def without_rows(route: sync_api.Route) -> None:
        answer = route.fetch()
        job = answer.json()
        job["drift"]["features"][0].update(value=None, drifted=False, rows=0)
        job["drift"]["features"][0].pop("statistic", None)
        route.fulfill(response=answer, json=job)

    view.route(re.compile(rf"/api/v1/jobs/{job_id}$"), without_rows)
    try:
        view.click("nav a[href='#/jobs']")
        view.locator(f"#jobs-table tr[data-job-id='{job_id}'] a").click()
        first = view.locator("#drift-table tbody tr").first
        first.wait_for()
        cells = first.locator("td").all_inner_texts()
        assert cells[2] == "\u2013" and cells[4] == "no rows", cells
        assert "drifted" not in (first.get_attribute("class") or "")
        bar, label = view.evaluate(
            """() => { const chart = window.Chart.getChart(document.querySelector('#drift-chart'));
                       return [chart.data.datasets[0].data[0], chart.data.labels[0]]; }"""
        )
        assert bar is None and label.endswith("(no rows)")
    finally:
        view.unroute_all()


def walk_through(
    stack: LocalHost, view: sync_api.Page, api: httpx.Client, key: str, hook: WebhookReceiver, sub_id: str
) -> None:
    sign_in(view, stack, key)
    # The key stays in this tab's session storage: not in the address, not in a cookie.
    assert key not in view.url
    assert view.evaluate("sessionStorage.getItem('aiaas.apiKey')") == key
    assert view.context.cookies() == []
    view.screenshot(path=str(ARTIFACTS / "01-jobs-empty.png"), full_page=True)

    job_id = submit_through_page(
        view, "breast-cancer-classifier", SAMPLES / "breast-cancer.csv", metadata="team=risk, batch=<b>7</b>"
    )
    assert view.locator("#job-head [data-status]").get_attribute("data-status") == "succeeded"
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    # The metadata typed into the form is the job's (so in its events too), shown on its page as text.
    assert job["metadata"] == {"team": "risk", "batch": "<b>7</b>"}
    assert view.locator("#job-metadata .tag").all_inner_texts() == ["team=risk", "batch=<b>7</b>"]
    results = api.get(f"/api/v1/jobs/{job_id}/results", params={"limit": 1000}).json()["items"]
    assert view.locator("#count-records").inner_text().split()[0] == str(job["counts"]["records"]) == "50"
    assert view.locator("#job-errors").is_hidden()  # no failed record, no Errors section

    # The chart: one bar per label the results carry, drawn on a canvas with pixels in it.
    view.wait_for_selector("#output-chart")
    labels = {str(item["output"]["label"]) for item in results}
    assert view.locator("#output-chart").get_attribute("data-points") == str(len(labels))
    assert inked_pixels(view, "#output-chart") > 1000
    # The first results as the API lists them, and the drift per feature of this tabular job.
    assert view.locator("#results-table tbody tr").count() == min(20, len(results))
    assert job["drift"]["features"]
    drift_rows = view.locator("#drift-table tbody tr")
    assert drift_rows.count() == len(job["drift"]["features"])
    assert view.locator("#drift-status").inner_text() == job["drift"]["status"]
    assert drift_rows.first.locator("td").first.inner_text() == job["drift"]["features"][0]["name"]
    # The same features as a chart above the table: a bar each, the drifted ones counted, pixels drawn.
    chart = view.locator("#drift-chart")
    assert chart.get_attribute("data-points") == str(len(job["drift"]["features"]))
    assert chart.get_attribute("data-drifted") == str(sum(f["drifted"] for f in job["drift"]["features"]))
    assert (chart.bounding_box() or {})["y"] < (view.locator("#drift-table").bounding_box() or {})["y"]
    assert inked_pixels(view, "#drift-chart") > 1000
    view.screenshot(path=str(ARTIFACTS / "02-job.png"), full_page=True)
    a_feature_without_rows_shows_no_number(view, job_id)

    view.click("nav a[href='#/jobs']")
    row = view.locator(f"#jobs-table tr[data-job-id='{job_id}']")
    row.wait_for()
    assert row.locator("[data-status]").get_attribute("data-status") == "succeeded"
    view.screenshot(path=str(ARTIFACTS / "03-jobs.png"), full_page=True)

    view.click("nav a[href='#/usage']")
    view.wait_for_selector("#usage-chart[data-points]")
    assert int(view.locator("#usage-chart").get_attribute("data-points") or 0) >= 30  # a day per bar, a month
    assert view.locator("#usage-chart").get_attribute("data-records") == "50"  # this tenant's one job
    # Figures as people read them: the daily records quota with its thousands separated.
    limit = api.get("/api/v1/usage").json()["quota"]["recordsPerDay"]["limit"]
    quota_row = view.locator("#usage-totals tr", has_text="recordsPerDay").locator("td")
    assert quota_row.nth(1).inner_text() == f"{limit:,}"
    view.screenshot(path=str(ARTIFACTS / "04-usage.png"), full_page=True)

    view.click("nav a[href='#/keys']")
    view.wait_for_selector("#keys-table tbody tr")
    view.screenshot(path=str(ARTIFACTS / "05-keys.png"), full_page=True)

    # The job's event was refused (400): a dead letter with a button that sends it again.
    deadline = time.monotonic() + 60
    while not (letters := api.get(f"/api/v1/subscriptions/{sub_id}/deadletters").json()["items"]):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.3)
    event_id = letters[0]["event"]["id"]
    view.click("nav a[href='#/subscriptions']")
    view.wait_for_selector("body[data-page=subscriptionsPage]")
    letter = view.locator("table.deadletters tbody tr")
    assert letter.count() == 1
    assert "UndeliverableDueToClientError" in letter.inner_text()
    view.screenshot(path=str(ARTIFACTS / "06-subscriptions.png"), full_page=True)
    hook.answer_status = 200
    letter.locator("button.redeliver").click()
    sync_api.expect(view.locator("#message")).to_have_text("1 event(s) scheduled for delivery.")
    delivered = hook.wait_until(lambda: any(event["id"] == event_id for event in hook.events), timeout=60)
    assert [event["id"] for event in delivered] == [event_id]  # the same event, its id kept


def test_errors_no_request_leaves_the_platform_and_the_page_refuses_framing(
    stack: LocalHost, page: tuple[sync_api.Page, list[str], list[str]], tmp_path: Path
) -> None:
    view, outside, problems = page
    answer = view.goto(console_url(stack))
    assert answer is not None
    headers = answer.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    # A file with more bad records than one page of the Errors table: the job's page lists exactly those records,
    # with their lines, ids, fields, codes and reasons, the job's own error above them, the rest behind "more".
    bad, expected = file_with_bad_records(tmp_path)
    key = tenant_key("console-b")
    sign_in(view, stack, key)
    job_id = submit_through_page(view, "breast-cancer-classifier", bad)
    assert view.locator("#job-head [data-status]").get_attribute("data-status") == "partially_succeeded"
    assert view.locator("#count-failed").inner_text().split()[0] == str(len(expected))
    job_error = view.locator("#job-error")
    assert job_error.inner_text().startswith(f"SomeRecordsFailed: {len(expected)} of 60 records failed")
    listed = all_errors(stack, key, job_id)
    assert [item["line"] for item in listed] == sorted(expected)
    for item in listed:
        assert expected[item["line"]] in item["message"], item
    shown = view.locator("#errors-table tbody tr")
    shown.first.wait_for()
    # Above the table, in reading order: the job-level error, then the records.
    assert (job_error.bounding_box() or {})["y"] < (shown.first.bounding_box() or {})["y"]
    assert table_rows(view) == [error_row(item) for item in listed[:50]]
    view.screenshot(path=str(ARTIFACTS / "07-job-with-errors.png"), full_page=True)
    view.click("#errors-more")
    sync_api.expect(shown).to_have_count(len(listed))
    assert table_rows(view) == [error_row(item) for item in listed]
    assert view.locator("#errors-more").is_hidden()
    # Back to the job: the table starts again from the first page, each record once.
    view.click("nav a[href='#/jobs']")
    view.locator(f"#jobs-table tr[data-job-id='{job_id}'] a").click()
    sync_api.expect(shown).to_have_count(50)
    assert table_rows(view) == [error_row(item) for item in listed[:50]]
    refreshing_keeps_each_record_once(stack, view, job_id, listed)
    view.click("#sign-out")

    # Only the console's own files: nothing else of the package, however the path is spelled.
    base = console_url(stack)
    assert httpx.get(f"{base}/static/vendor/chart.js-4.6.1/LICENSE.md").status_code == 200
    for path in ("/static/%2e%2e/__init__.py", "/static/..%2f__init__.py", "/static/index.html", "/static/x.js"):
        refused = httpx.get(base + path)
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "NotFound"), path
    sign_in(view, stack, tenant_key("console-c"))
    for target in ("#/usage", "#/keys", "#/subscriptions", "#/jobs"):
        view.click(f"nav a[href='{target}']")
        view.wait_for_load_state("networkidle")
    loaded = view.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert any("chart.umd.min.js" in url for url in loaded)  # the chart library came, from the platform
    assert all(is_loopback(url) for url in loaded)
    assert outside == []
    # The one 503 the test answered on purpose (refreshing_keeps_each_record_once) is the browser's only complaint.
    assert problems == ["Failed to load resource: the server responded with a status of 503 (Service Unavailable)"]
    # A wrong key is refused, and forgotten.
    view.click("#sign-out")
    view.fill("#api-key", "not-a-key")
    view.click("#sign-in-form button[type=submit]")
    view.wait_for_selector("#message.error")
    assert view.evaluate("sessionStorage.getItem('aiaas.apiKey')") is None


def test_cancel_a_running_job_from_its_page_and_a_rejected_job_without_a_version(
    stack: LocalHost, page: tuple[sync_api.Page, list[str], list[str]], tmp_path: Path
) -> None:
    """Cancel job on the page of a job still running: it ends cancelled with what ran, as the API and its one
    event say. Then a job rejected before its model resolved (an unknown name, so no version) in the list and on
    its page: its model's name alone, never "name@null"."""
    view, outside, problems = page
    key = tenant_key("console-d")
    api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    with WebhookReceiver() as hook, api:
        assert api.post("/v1/subscriptions", json={"endpointUrl": hook.url}).status_code == 201
        sign_in(view, stack, key)
        drifted_features_stand_out(view, api, tmp_path)
        view.click("nav a[href='#/jobs']")
        # text-embedding: its own compute is the floor of a job's time (about 500 lines a second on this 2-core
        # machine, bench/results.json rawByModel), so 40,000 lines (14 shards of 128 KB, the model's shard size)
        # run for a minute here and for seconds on a machine several times faster; the page needs a refresh or two.
        lines = (SAMPLES / "texts.txt").read_text().splitlines()
        total = 40_000
        big = tmp_path / "many-texts.txt"
        big.write_text("".join(f"{lines[i % len(lines)]}\n" for i in range(total)))
        job_id = submit_through_page(view, "text-embedding", big, until_finished=False)
        # Once a shard is done (its records counted), so that something ran; then Cancel.
        records = view.locator("#count-records")
        sync_api.expect(records).to_have_text(re.compile(r"^[1-9][0-9]*records$"), timeout=180_000)
        view.locator("#cancel-job").click()
        sync_api.expect(view.locator("#message")).to_have_text("Cancel requested.")
        status = view.locator("#job-head [data-status]")
        sync_api.expect(status).to_have_attribute("data-status", "cancelled", timeout=180_000)
        view.locator("#job-head[data-settled]").wait_for()
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and job["error"]["code"] == "Cancelled", job
        assert 0 < job["counts"]["records"] < total  # it stopped part way
        for name in ("records", "succeeded", "failed"):
            assert view.locator(f"#count-{name}").inner_text().split()[0] == str(job["counts"][name]), name
        assert view.locator("#cancel-job").count() == 0  # nothing left to cancel
        # The bar shows the part that ran, not a full bar.
        bar = view.locator("#job-head progress")
        assert (bar.evaluate("bar => bar.value"), bar.evaluate("bar => bar.max")) == (
            job["shards"]["done"],
            job["shards"]["count"],
        )
        assert view.locator("#results-table tbody tr").count() == 20  # what ran stays readable
        # An embedding's long run of numbers wraps in its cell: nothing sticks out of the card.
        assert view.locator("#job-results").evaluate("card => card.scrollWidth <= card.clientWidth")
        assert view.locator("#job-error").inner_text().startswith("Cancelled")
        view.screenshot(path=str(ARTIFACTS / "09-job-cancelled.png"), full_page=True)

        # An upload for a model nobody has: a rejected job whose model has a name and no version.
        orphan = "inbox/no-such-model/orphan.jsonl"
        get_platform().blobs.write_bytes("tenant-console-d", orphan, b'{"id": "a"}\n')
        rejected = wait_for_job(api, orphan)
        assert rejected["status"] == "rejected" and rejected["model"] == {"name": "no-such-model", "version": None}
        # Its event came after the cancelled job's: by now a second event of the cancelled job would have too.
        hook.wait_until(lambda: any(e["data"].get("jobId") == rejected["jobId"] for e in hook.events), 60)
        mine = [event for event in hook.events if event["data"].get("jobId") == job_id]
        assert [event["eventType"] for event in mine] == ["AIaaS.Job.Cancelled"]
        assert mine[0]["data"]["counts"] == job["counts"]

        view.click("nav a[href='#/jobs']")
        row = view.locator(f"#jobs-table tr[data-job-id='{rejected['jobId']}']")
        row.wait_for()
        assert row.locator("td").nth(1).inner_text() == "no-such-model"
        assert view.locator("#jobs-table").inner_text().count("@null") == 0
        view.screenshot(path=str(ARTIFACTS / "10-jobs-cancelled-and-rejected.png"), full_page=True)
        row.locator("a").click()
        sync_api.expect(view.locator("#job-head [data-status]")).to_have_attribute("data-status", "rejected")
        view.locator("#job-head[data-settled]").wait_for()
        # It never ran: no progress drawn, no outputs to chart, its error says why.
        assert view.locator("#job-head progress").evaluate("bar => bar.value") == 0
        assert view.locator("#job-chart").is_hidden() and view.locator("#job-results").is_hidden()
        assert view.locator("#job-error").inner_text().startswith("UnknownModel")
        assert view.locator("#job-model").inner_text() == f"no-such-model over {orphan}"
        assert "@null" not in view.locator("#job-head").inner_text()
        view.screenshot(path=str(ARTIFACTS / "11-job-rejected.png"), full_page=True)
    assert outside == []
    assert problems == []


def drifted_features_stand_out(view: sync_api.Page, api: httpx.Client, tmp_path: Path) -> None:
    """A job whose records are three times their usual size drifts on every feature: every bar is past the
    threshold line, red, and cut at the chart's end (p-values far below 0.05 would squash the scale)."""
    records = [json.loads(line) for line in (SAMPLES / "breast-cancer.jsonl").read_text().splitlines()[:50]]
    lines = []
    for record in records:
        record.pop("expected", None)
        lines.append(json.dumps({k: v * 3 if isinstance(v, float | int) else v for k, v in record.items()}))
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("\n".join(lines) + "\n")
    job_id = submit_through_page(view, "breast-cancer-classifier", shifted)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["drift"]["status"] == "drifted"
    drifted = [f for f in job["drift"]["features"] if f["drifted"]]
    assert drifted
    chart = view.locator("#drift-chart")
    assert chart.get_attribute("data-drifted") == str(len(drifted))
    assert view.locator("#drift-status").inner_text() == "drifted"
    assert view.locator("#drift-table tbody tr.drifted").count() == len(drifted)
    bars = view.evaluate(
        """() => window.Chart.getChart(document.querySelector('#drift-chart')).data.datasets[0].data"""
    )
    for feature, bar in zip(job["drift"]["features"], bars, strict=True):
        assert (bar > 1) == feature["drifted"], (feature, bar)
    assert inked_pixels(view, "#drift-chart") > 1000
    view.screenshot(path=str(ARTIFACTS / "08-job-drifted.png"), full_page=True)


def wait_for_job(api: httpx.Client, blob_path: str) -> dict[str, Any]:
    """The job of a blob path once the platform made one (the watcher sees a new blob within seconds)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for job in api.get("/v1/jobs").json()["items"]:
            if job["input"]["blobPath"] == blob_path:
                return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"no job for {blob_path}")


def refreshing_keeps_each_record_once(
    stack: LocalHost, view: sync_api.Page, job_id: str, listed: list[dict[str, Any]]
) -> None:
    """The job page refreshes while a job runs; its Errors table is re-read each time and must list each record once,
    also after "more". The job is over, so its answer is shown as `running` until the test lets it end: the rows
    still come from the real errors route."""
    running = [True]
    failing = [False]
    reads: list[str] = []

    def job_answer(route: sync_api.Route) -> None:
        if failing[0]:
            failing[0] = False
            busy = {"error": {"code": "ServiceBusy", "message": "the service is busy"}}
            route.fulfill(status=503, json=busy, headers={"Retry-After": "1"})
            return
        answer = route.fetch()
        job = answer.json()
        if running[0]:
            job["status"] = "running"
        route.fulfill(response=answer, json=job)

    def errors_read(route: sync_api.Route) -> None:
        reads.append(route.request.url)
        route.continue_()

    def wait_for_reads(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(reads) < count:
            assert time.monotonic() < deadline, f"the page read the errors {len(reads)} times, not {count}"
            view.wait_for_timeout(100)

    view.route(re.compile(rf"/api/v1/jobs/{job_id}(\?.*)?$"), job_answer)
    view.route(re.compile(rf"/api/v1/jobs/{job_id}/errors\?"), errors_read)
    try:
        view.click("nav a[href='#/jobs']")
        view.locator(f"#jobs-table tr[data-job-id='{job_id}'] a").click()
        shown = view.locator("#errors-table tbody tr")
        wait_for_reads(3)
        assert view.locator("#job-head [data-status]").get_attribute("data-status") == "running"
        assert table_rows(view) == [error_row(item) for item in listed[:50]]
        view.click("#errors-more")
        sync_api.expect(shown).to_have_count(len(listed))
        wait_for_reads(len(reads) + 2)  # two more refreshes after "more"
        assert table_rows(view) == [error_row(item) for item in listed]
        # One refresh the platform answers 503: the page says so, keeps refreshing, and clears the message after.
        failing[0] = True
        sync_api.expect(view.locator("#message")).to_contain_text("Refresh failed", timeout=30_000)
        wait_for_reads(len(reads) + 1)
        sync_api.expect(view.locator("#message")).to_be_hidden()
        assert table_rows(view) == [error_row(item) for item in listed]
        running[0] = False
        sync_api.expect(view.locator("#job-head [data-status]")).to_have_attribute("data-status", "partially_succeeded")
        assert table_rows(view) == [error_row(item) for item in listed]
    finally:
        view.unroute_all()


def file_with_bad_records(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """60 JSONL records of which 51 are bad in three ways; the bad ones' lines -> what their reason must say."""
    records = [json.loads(line) for line in (SAMPLES / "breast-cancer.jsonl").read_text().splitlines()[:60]]
    lines: list[str] = []
    expected: dict[int, str] = {}
    for index, record in enumerate(records):
        line = index + 1
        if index % 7 == 0:  # every seventh record is good
            lines.append(json.dumps(record))
        elif index % 3 == 0:
            lines.append('{"id": "broken", "mean radius": ')
            expected[line] = "not valid JSON"
        elif index % 3 == 1:
            del record["mean area"]
            lines.append(json.dumps(record))
            expected[line] = "feature 'mean area' is missing"
        else:
            record["mean texture"] = "<b>abc</b>"  # shown as text, never as markup
            lines.append(json.dumps(record))
            expected[line] = "feature 'mean texture' must be a number"
    path = tmp_path / "with-bad-records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert len(expected) == 51  # one more than a page of the console's Errors table
    return path, expected


def all_errors(stack: LocalHost, key: str, job_id: str) -> list[dict[str, Any]]:
    """The job's failed records as the API lists them, every page."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 20}
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}) as api:
        while True:
            page = api.get(f"/v1/jobs/{job_id}/errors", params=params).json()
            items += page["items"]
            if not page["continuationToken"]:
                return items
            params["continuationToken"] = page["continuationToken"]


def error_row(item: dict[str, Any]) -> list[str]:
    return [str(item["line"]), item["id"] or "", item["field"] or "", item["code"], item["message"]]


def table_rows(view: sync_api.Page) -> list[list[str]]:
    rows = view.locator("#errors-table tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))"
    )
    assert view.locator("#errors-table tbody b").count() == 0  # tenant text never became markup
    return [list(row) for row in rows]


@pytest.fixture(scope="module", autouse=True)
def _fresh_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)

"""The tenant's `aiaas` commands (jobs, events, usage, subscriptions, keys) over the HTTP API, on this SDK."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskID, TextColumn
    from rich.table import Table
except ImportError as missing:  # `pip install aiaas-client` installs the script without the extra's packages
    raise SystemExit(
        f"aiaas: the CLI needs the SDK's cli extra (typer and rich): pip install 'aiaas-client[cli]' ({missing})"
    ) from None

# Commands this module answers; `aiaas keys` is the tenant's only when it names no tenant (see tenant_keys).
TENANT_COMMANDS = frozenset({"jobs", "events", "usage", "subscriptions"})
# Exit statuses of `jobs submit --wait` (CONTRACT.md "Clients"); every other failure exits 1 too.
EXIT_BY_STATUS = {"succeeded": 0, "partially_succeeded": 2}
ENDED = frozenset({"succeeded", "partially_succeeded", "failed", "rejected", "cancelled"})
ROLES = ("AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin")
# `events tail`: how often it asks, and how far back each poll looks again (an event may be logged a little after
# its eventTime); ids already shown are skipped.
TAIL_INTERVAL_SECONDS = 2.0
TAIL_OVERLAP = timedelta(minutes=2)
# `jobs submit --wait` that ends with failed records shows this many, then points at `jobs errors` for the rest.
SUBMIT_ERRORS_SHOWN = 5
# `jobs errors` without --limit; the API's largest page is 5,000 records.
ERRORS_LIMIT = 20
MAX_PAGE = 5000
ERROR_COLUMNS = ["line", "id", "field", "code", "reason"]

# Piped into grep or a file, a table keeps each row on one line (rich would fold it to 80 columns).
out = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 4096)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# Typer's rich tracebacks print local variables by default: an API key among them must never reach the screen.
app = typer.Typer(
    name="aiaas",
    help="The tenant's commands over the HTTP API (AIAAS_API_URL and AIAAS_API_KEY, or a profile). The operator's "
    "commands (aiaas up, tenants, models, demo) come with the platform: installed beside it, `aiaas` is the "
    "platform's.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="submit files, follow and read jobs", no_args_is_help=True)
events_app = typer.Typer(help="the tenant's published events", no_args_is_help=True)
subs_app = typer.Typer(
    help="webhook and callback subscriptions, their dead letters and redelivery", no_args_is_help=True
)
keys_app = typer.Typer(
    help="the tenant's own API keys over the API (the operator's `aiaas keys create TENANT ...` names a tenant)",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(events_app, name="events")
app.add_typer(subs_app, name="subscriptions")
app.add_typer(keys_app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout, nothing else")]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="a profile of the profile file (default: AIAAS_PROFILE, else 'default')"),
]


class CliError(Exception):
    """A failure the command reports in one line and exits 1 for."""


# --- configuration -----------------------------------------------------------------------------------------------


def profile_file() -> Path:
    """AIAAS_PROFILE_FILE, else $XDG_CONFIG_HOME/aiaas/profile.toml (~/.config/aiaas/profile.toml)."""
    if os.environ.get("AIAAS_PROFILE_FILE"):
        return Path(os.environ["AIAAS_PROFILE_FILE"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aiaas" / "profile.toml"


def resolve_credentials(profile: str | None, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(api_url, api_key): a --profile wins over the environment; otherwise AIAAS_API_URL and AIAAS_API_KEY, each
    missing one taken from the profile AIAAS_PROFILE names (or `default`, when the file has one)."""
    env = os.environ if environ is None else environ
    path = profile_file()
    name = profile or env.get("AIAAS_PROFILE") or "default"
    section: dict[str, Any] = {}
    if path.is_file():
        try:
            section = tomllib.loads(path.read_text()).get(name) or {}
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise CliError(f"cannot read the profile file {path}: {error}") from None
        if not isinstance(section, dict):
            raise CliError(f"profile {name!r} in {path} is not a table")
    if (profile or env.get("AIAAS_PROFILE")) and not section:
        raise CliError(f"no profile {name!r} in {path}")
    if profile:
        url, key = (
            section.get("api_url") or env.get("AIAAS_API_URL"),
            section.get("api_key") or env.get("AIAAS_API_KEY"),
        )
    else:
        url, key = (
            env.get("AIAAS_API_URL") or section.get("api_url"),
            env.get("AIAAS_API_KEY") or section.get("api_key"),
        )
    if not key:
        raise CliError(f"no API key: set AIAAS_API_KEY, or api_key in a profile of {path}")
    if not url:
        raise CliError(f"no API URL: set AIAAS_API_URL (e.g. http://127.0.0.1:7071/api), or api_url in {path}")
    return str(url), str(key)


def client(profile: str | None) -> Any:
    """The SDK's client for the chosen credentials."""
    from aiaas_client import Client

    url, key = resolve_credentials(profile)
    return Client(url, key)


# --- output ------------------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """An SDK value as the API's JSON (models, dataclasses and enums to dicts, lists and strings)."""
    if hasattr(value, "to_api"):  # the SDK's models: the object as the API wrote it
        return plain(value.to_api())
    if hasattr(value, "model_dump"):
        return plain(value.model_dump(mode="json", by_alias=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raw = getattr(value, "raw", None)  # an SDK object that keeps the answer it was made from
    if isinstance(raw, dict):
        return plain(raw)
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(plain(value), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(message: str) -> NoReturn:
    err.print(f"error: {escape(message)}")
    raise typer.Exit(1)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    grid = Table(title=title, show_edge=False, header_style="bold")
    for index, name in enumerate(columns):
        # The first column is what a person copies into the next command (a job id): never cut, never folded.
        grid.add_column(name, no_wrap=index == 0, overflow="fold")
    for row in rows:
        grid.add_row(*(escape(cell(v)) for v in row))
    return grid


def model_label(job: dict[str, Any]) -> str:
    model = job.get("model") or {}
    return f"{model.get('name', '?')}@{model.get('version') or '?'}"


def reason(job: dict[str, Any]) -> str:
    """Why a job ended as it did; with failed records, the command that lists them (the platform's error says
    only "see errors.jsonl", a blob the tenant would have to fetch)."""
    error = job.get("error") or {}
    counts = job.get("counts") or {}
    failed = counts.get("failed")
    if error:
        text = f"{error.get('code', 'Error')}: {error.get('message', '')}"
        return f"{text} (failed records: `{errors_hint(job)}`)" if failed else text
    if failed:
        return f"{failed} of {counts.get('records', '?')} records failed (failed records: `{errors_hint(job)}`)"
    return str(job.get("status"))


def errors_hint(job: dict[str, Any]) -> str:
    """The command that lists every failed record of the job."""
    failed = int((job.get("counts") or {}).get("failed") or 0)
    return f"aiaas jobs errors {job.get('jobId')}" + (" --limit 0" if failed > ERRORS_LIMIT else "")


def error_rows(items: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    for item in items:
        yield [item.get("line"), item.get("id"), item.get("field"), item.get("code"), item.get("message")]


def show_failed_records(api: Any, job: dict[str, Any]) -> None:
    """The first few failed records of a job that ended with some, and the command that lists them all."""
    import httpx

    from aiaas_client.errors import AiaasError

    failed = int((job.get("counts") or {}).get("failed") or 0)
    if not failed or job.get("status") not in ("partially_succeeded", "failed"):
        return
    try:
        shown = take(api.jobs.errors(str(job.get("jobId")), limit=SUBMIT_ERRORS_SHOWN), SUBMIT_ERRORS_SHOWN)
    except (AiaasError, httpx.HTTPError) as error:  # the job's own outcome still stands: say so, exit by it
        err.print(f"cannot list the failed records: {escape(str(error))}")
        return
    title = "failed records" if len(shown) >= failed else f"failed records: the first {len(shown)} of {failed}"
    out.print(table(ERROR_COLUMNS, error_rows(shown), title=title))
    out.print(f"all of them: {errors_hint(job)}")


def show_job(job: dict[str, Any]) -> None:
    counts = job.get("counts") or {}
    shards = job.get("shards") or {}
    rows: list[tuple[str, Any]] = [
        ("job", job.get("jobId")),
        ("status", job.get("status")),
        ("model", model_label(job)),
        ("input", (job.get("input") or {}).get("blobPath")),
        ("records", counts.get("records")),
        ("succeeded", counts.get("succeeded")),
        ("failed", counts.get("failed")),
        ("shards", f"{shards.get('done', 0)}/{shards.get('count', '?')}" if shards else None),
        ("created", job.get("createdAt")),
        ("completed", job.get("completedAt")),
    ]
    if job.get("metadata"):
        rows.append(("metadata", job["metadata"]))
    if job.get("error"):
        rows.append(("error", reason(job)))
    drift = job.get("drift") or {}
    if drift:
        drifted = [f["name"] for f in drift.get("features") or [] if f.get("drifted")]
        rows.append(("drift", drift.get("status", "") + (f" ({', '.join(drifted)})" if drifted else "")))
    grid = Table(show_header=False, show_edge=False, box=None)
    for name, value in rows:
        if value is not None:
            grid.add_row(f"[bold]{name}[/bold]", escape(cell(value)))
    out.print(grid)


def job_rows(jobs: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    for job in jobs:
        counts = job.get("counts") or {}
        yield [
            job.get("jobId"),
            job.get("status"),
            model_label(job),
            counts.get("records"),
            counts.get("succeeded"),
            counts.get("failed"),
            job.get("createdAt"),
        ]


def parse_pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} takes key=value, not {item!r}")
        pairs[key] = value
    return pairs


def run_api(call: Callable[[], Any]) -> Any:
    """Runs one SDK call; the SDK's errors, and a platform that cannot be reached, become one line and exit 1."""
    import httpx

    from aiaas_client.errors import AiaasError

    try:
        return call()
    except CliError as error:
        fail(str(error))
    except AiaasError as error:
        status = f" ({error.status})" if error.status else ""
        fail(f"{error.code}{status}: {error.message}" if error.code else f"{error.message}{status}")
    except httpx.HTTPError as error:  # no answer at all (the SDK retried what it could)
        fail(f"cannot reach the API: {type(error).__name__}: {error}")


def take(items: Iterable[Any], limit: int) -> list[dict[str, Any]]:
    """The first `limit` items of an SDK iterator that follows continuation tokens (0: all of them)."""
    taken: list[dict[str, Any]] = []
    for item in items:
        taken.append(plain(item))
        if limit and len(taken) >= limit:
            break
    return taken


# --- jobs --------------------------------------------------------------------------------------------------------


class SubmitProgress:
    """The bars of `jobs submit`: bytes sent while the file uploads, then shards and records done while it runs."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TextColumn("{task.fields[detail]}"),
            console=err,
            disable=not enabled,
        )
        self.upload: TaskID | None = None
        self.job: TaskID | None = None
        self.job_id: str | None = None

    def __enter__(self) -> SubmitProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_upload(self, sent: int, total: int) -> None:
        amount = f"{sent / 1e6:.1f}/{total / 1e6:.1f} MB"
        if self.upload is None:
            self.upload = self.progress.add_task("upload", total=total or 1, amount=amount, detail="")
        self.progress.update(self.upload, completed=sent, total=total or 1, amount=amount)

    def on_job(self, job: Any) -> None:
        view = plain(job)
        self.job_id = str(view.get("jobId") or "") or None
        shards, counts = view.get("shards") or {}, view.get("counts") or {}
        done, total = int(shards.get("done") or 0), int(shards.get("count") or 0)
        amount = f"{done}/{total or '?'} shards"
        detail = f"{counts.get('succeeded', 0)} records ok, {counts.get('failed', 0)} failed  {view.get('status')}"
        if self.job is None:
            self.job = self.progress.add_task(f"job {view.get('jobId', '')}", total=total or None, amount="", detail="")
        self.progress.update(self.job, completed=done, total=total or None, amount=amount, detail=detail)


@jobs_app.command("submit")
def jobs_submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="the file to run")],
    model: Annotated[str, typer.Option("--model", "-m", help="model name, name@version or name@alias")],
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until the job ends (exit 0 ok, 2 partial, 1 failed)")
    ] = False,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="key=value, repeatable (up to 16), echoed in its events")
    ] = None,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Upload FILE to MODEL's inbox and start its job; with --wait follow it to the end."""
    api = run_api(lambda: client(profile))
    pairs = run_api(lambda: parse_pairs(metadata, "--metadata"))
    bars = SubmitProgress(enabled=not json_out)
    try:
        with bars:
            job = plain(
                run_api(
                    lambda: api.submit_file(
                        file,
                        model,
                        wait=wait,
                        metadata=pairs or None,
                        on_progress=bars.on_upload,
                        on_update=bars.on_job,
                    )
                )
            )
    except KeyboardInterrupt:
        # Ctrl-C stops the waiting, not the job (`aiaas jobs cancel` does that).
        if bars.job_id:
            err.print(f"stopped waiting; job {bars.job_id} goes on: aiaas jobs show {bars.job_id}")
        else:
            err.print("stopped before the job started")
        raise typer.Exit(130) from None
    if json_out:
        print_json(job)
    elif not wait:
        out.print(f"job {job.get('jobId')} {job.get('status')}  (follow it: aiaas jobs show {job.get('jobId')})")
    else:
        show_job(job)
        show_failed_records(api, job)
    if wait:
        status = str(job.get("status"))
        code = EXIT_BY_STATUS.get(status, 1)
        if code:
            err.print(f"job {job.get('jobId')} {status}: {escape(reason(job))}")
        raise typer.Exit(code)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option("--limit", min=0, help="at most this many, newest first (0: all)")] = 20,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """The tenant's jobs, newest first."""
    api = run_api(lambda: client(profile))
    jobs = run_api(lambda: take(api.jobs.list(), limit))
    if json_out:
        print_json(jobs)
        return
    out.print(table(["job", "status", "model", "records", "ok", "failed", "created"], job_rows(jobs)))


@jobs_app.command("show")
def jobs_show(job_id: str, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """One job: status, counts, shards, error and drift."""
    api = run_api(lambda: client(profile))
    job = plain(run_api(lambda: api.jobs.get(job_id)))
    if json_out:
        print_json(job)
    else:
        show_job(job)
        if (job.get("counts") or {}).get("failed"):
            out.print(f"failed records: {errors_hint(job)}")


@jobs_app.command("results")
def jobs_results(
    job_id: str,
    limit: Annotated[int, typer.Option("--limit", min=0, help="at most this many results (0: all)")] = 20,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """A job's results in record order."""
    api = run_api(lambda: client(profile))
    items = run_api(lambda: take(api.jobs.results(job_id), limit))
    if json_out:
        print_json(items)
        return
    out.print(table(["record", "id", "output"], ([i.get("recordIndex"), i.get("id"), i.get("output")] for i in items)))


@jobs_app.command("errors")
def jobs_errors(
    job_id: str,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="at most this many failed records (0: all)")
    ] = ERRORS_LIMIT,
    page_size: Annotated[
        int | None,
        typer.Option("--page-size", min=1, max=MAX_PAGE, help="records a request (default: what --limit asks)"),
    ] = None,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """A job's failed records in record order: line, id, field, code and reason."""
    api = run_api(lambda: client(profile))
    # One more than shown: whether to say that there are more.
    wanted = limit + 1 if limit else 0
    page = page_size or (min(wanted, MAX_PAGE) if wanted else None)
    items = run_api(lambda: take(api.jobs.errors(job_id, limit=page), wanted))
    more = bool(limit) and len(items) > limit
    items = items[:limit] if limit else items
    if json_out:
        print_json(items)
        return
    if not items:
        out.print(f"job {escape(job_id)} has no failed records")
        return
    out.print(table(ERROR_COLUMNS, error_rows(items)))
    if more:
        err.print(f"the first {limit} shown; all of them: aiaas jobs errors {escape(job_id)} --limit 0")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Cancel a queued or running job (what it computed stays readable)."""
    api = run_api(lambda: client(profile))
    job = plain(run_api(lambda: api.jobs.cancel(job_id)))
    if json_out:
        print_json(job)
    else:
        out.print(f"job {job.get('jobId', job_id)} {job.get('status', 'cancelling')}")


# --- events ------------------------------------------------------------------------------------------------------


def event_line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    what = data.get("status") or ""
    if data.get("error"):
        what += f" {data['error'].get('code', '')}"
    return f"{event.get('eventTime', '')}  {event.get('eventType', '')}  {event.get('subject', '')}  {what}".rstrip()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def poll_events(api: Any, since: str, event_type: str | None) -> list[dict[str, Any]]:
    return take(api.events.list(since=since, type=event_type), 0)


@events_app.command("tail")
def events_tail(
    event_type: Annotated[str | None, typer.Option("--type", help="only this event type")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601: show events from then on first (default: from now)")
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="seconds between polls")
    ] = TAIL_INTERVAL_SECONDS,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False,
    profile: ProfileOpt = None,
) -> None:
    """Follow the tenant's events as they are published (Ctrl-C ends)."""
    api = run_api(lambda: client(profile))
    cursor = since or iso(datetime.now(UTC))
    seen: dict[str, str] = {}  # id -> eventTime of what was shown, forgotten once older than the look-back
    try:
        while True:
            events = run_api(partial(poll_events, api, cursor, event_type))
            fresh = [e for e in events if e.get("id") not in seen]
            for event in sorted(fresh, key=lambda e: str(e.get("eventTime", ""))):
                seen[str(event.get("id"))] = str(event.get("eventTime", ""))
                if json_out:
                    print_json(event)
                else:
                    out.print(escape(event_line(event)))
                    sys.stdout.flush()
            if seen:
                newest = max(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in seen.values() if t)
                cursor = iso(max(newest - TAIL_OVERLAP, datetime.fromisoformat(cursor.replace("Z", "+00:00"))))
                seen = {i: t for i, t in seen.items() if t >= cursor}
            time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# --- usage -------------------------------------------------------------------------------------------------------

USAGE_FIELDS = ("jobs", "records", "succeeded", "failed", "bytes", "computeSeconds")


@app.command("usage")
def usage(
    start: Annotated[str | None, typer.Option("--from", help="date or ISO 8601 (default: 30 days ago)")] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="date or ISO 8601, exclusive (a date counts through its end)")
    ] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="model or day")] = "model",
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Metered usage of finished jobs, and the tenant's quota."""
    api = run_api(lambda: client(profile))
    report = plain(run_api(lambda: api.usage.get(start=start, end=end, group_by=group_by)))
    if json_out:
        print_json(report)
        return
    key = "day" if group_by == "day" else "model"
    rows = [[item.get(key), *(item.get(f) for f in USAGE_FIELDS)] for item in report.get("items") or []]
    totals = report.get("totals") or {}
    rows.append(["total", *(totals.get(f) for f in USAGE_FIELDS)])
    out.print(table([key, *USAGE_FIELDS], rows))
    quota = report.get("quota") or {}
    if quota:
        limits = [
            [name, *(figure.get(k) for k in ("limit", "used", "remaining"))] for name, figure in sorted(quota.items())
        ]
        out.print(table(["quota", "limit", "used", "remaining"], limits))


# --- subscriptions -----------------------------------------------------------------------------------------------


def subscription_rows(items: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    for sub in items:
        yield [
            sub.get("subscriptionId"),
            sub.get("kind"),
            sub.get("endpointUrl") or sub.get("callbackUrl"),
            sub.get("schema"),
            ",".join(sub.get("eventTypes") or []),
            ",".join(sub.get("modelNames") or []),
            sub.get("createdAt"),
        ]


SUB_COLUMNS = ["subscription", "kind", "endpoint", "schema", "event types", "models", "created"]


@subs_app.command("list")
def subscriptions_list(json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """The tenant's subscriptions."""
    api = run_api(lambda: client(profile))
    items = run_api(lambda: take(api.subscriptions.list(), 0))
    if json_out:
        print_json(items)
    else:
        out.print(table(SUB_COLUMNS, subscription_rows(items)))


@subs_app.command("create")
def subscriptions_create(
    endpoint: Annotated[
        str | None, typer.Argument(metavar="[ENDPOINT_URL]", help="the webhook (the same as --endpoint-url)")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="a webhook: it must pass the validation handshake first")
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option("--callback-url", help="a Logic Apps callback instead (no handshake; not with --endpoint-url)"),
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--event-type", help="repeatable (default: every job and model event; a callback: the outcomes)"),
    ] = None,
    model_name: Annotated[
        list[str] | None, typer.Option("--model-name", help="only events of this model, repeatable (default: all)")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            help="webhooks: 16-256 characters sent in the aiaas-delivery-secret header of every delivery, never shown",
        ),
    ] = None,
    schema: Annotated[
        str, typer.Option("--schema", help="EventGridSchema or CloudEventSchemaV1_0")
    ] = "EventGridSchema",
    max_delivery_attempts: Annotated[int | None, typer.Option("--max-delivery-attempts", min=1, max=30)] = None,
    ttl_minutes: Annotated[int | None, typer.Option("--event-ttl-minutes", min=1, max=1440)] = None,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Subscribe a webhook (ENDPOINT_URL or --endpoint-url) or a callback (--callback-url) to the tenant's events."""
    if endpoint and endpoint_url and endpoint != endpoint_url:
        fail("give the webhook once: ENDPOINT_URL or --endpoint-url")
    webhook = endpoint_url or endpoint
    if bool(webhook) == bool(callback_url):
        fail("give a webhook (ENDPOINT_URL or --endpoint-url) or --callback-url, one of them")
    api = run_api(lambda: client(profile))
    created = plain(
        run_api(
            lambda: api.subscriptions.create(
                webhook,
                callback_url=callback_url,
                event_types=event_type or None,
                model_names=model_name or None,
                schema=schema,
                max_delivery_attempts=max_delivery_attempts,
                event_time_to_live_in_minutes=ttl_minutes,
                secret=secret,
            )
        )
    )
    if json_out:
        print_json(created)
    else:
        out.print(table(SUB_COLUMNS, subscription_rows([created])))


@subs_app.command("show")
def subscriptions_show(subscription_id: str, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """One subscription: where it delivers, what, in which schema, with which retry policy."""
    api = run_api(lambda: client(profile))
    sub = plain(run_api(lambda: api.subscriptions.get(subscription_id)))
    if json_out:
        print_json(sub)
        return
    retry = sub.get("retryPolicy") or {}
    ttl = retry.get("eventTimeToLiveInMinutes")
    rows: list[tuple[str, Any]] = [
        ("subscription", sub.get("subscriptionId")),
        ("kind", sub.get("kind")),
        ("endpoint", sub.get("endpointUrl") or sub.get("callbackUrl")),
        ("schema", sub.get("schema")),
        ("event types", ", ".join(sub.get("eventTypes") or []) or None),
        ("models", ", ".join(sub.get("modelNames") or []) or "all"),
        ("max delivery attempts", retry.get("maxDeliveryAttempts")),
        ("event time to live", f"{ttl} min" if ttl else None),
        ("secret", "set (never shown)" if sub.get("hasSecret") else "none"),
        ("created", sub.get("createdAt")),
    ]
    grid = Table(show_header=False, show_edge=False, box=None)
    for name, value in rows:
        if value is not None:
            grid.add_row(f"[bold]{name}[/bold]", escape(cell(value)))
    out.print(grid)


@subs_app.command("delete")
def subscriptions_delete(subscription_id: str, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Remove a subscription: its deliveries stop at once."""
    api = run_api(lambda: client(profile))
    run_api(lambda: api.subscriptions.delete(subscription_id))
    if json_out:
        print_json({"subscriptionId": subscription_id, "deleted": True})
    else:
        out.print(f"subscription {escape(subscription_id)} deleted")


@subs_app.command("deadletters")
def subscriptions_deadletters(
    subscription_id: str,
    limit: Annotated[int, typer.Option("--limit", min=0, help="at most this many (0: all)")] = 50,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Events a subscription could not deliver, with why."""
    api = run_api(lambda: client(profile))
    items = run_api(lambda: take(api.subscriptions.dead_letters(subscription_id), limit))
    if json_out:
        print_json(items)
        return
    rows = (
        [
            (i.get("event") or {}).get("id"),
            (i.get("event") or {}).get("eventType"),
            i.get("deadLetterReason"),
            i.get("deliveryAttempts"),
            i.get("lastHttpStatusCode"),
            i.get("lastDeliveryAttemptTime"),
        ]
        for i in items
    )
    out.print(table(["event", "type", "reason", "attempts", "last status", "last attempt"], rows))


@subs_app.command("redeliver")
def subscriptions_redeliver(
    subscription_id: str,
    event_id: Annotated[list[str] | None, typer.Option("--event-id", help="repeatable")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601: every event from then on")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601, with --since")] = None,
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Deliver events again (by id, or a time window), with their original ids."""
    if not event_id and not since:
        fail("give --event-id ID (repeatable) or --since TIME")
    api = run_api(lambda: client(profile))
    options: dict[str, Any] = {"event_ids": event_id} if event_id else {"since": since, "until": until}
    answer = plain(run_api(lambda: api.subscriptions.redeliver(subscription_id, **options)))
    if json_out:
        print_json(answer)
    else:
        out.print(f"redelivery accepted: {escape(cell(answer))}")


# --- keys --------------------------------------------------------------------------------------------------------


@keys_app.command("list")
def keys_list(json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """The tenant's keys (never their secrets)."""
    api = run_api(lambda: client(profile))
    items = run_api(lambda: take(api.keys.list(), 0))
    if json_out:
        print_json(items)
    else:
        out.print(
            table(
                ["key", "name", "role", "created"],
                ([k.get("id"), k.get("name"), k.get("role"), k.get("createdAt")] for k in items),
            )
        )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="what the key is for")],
    role: Annotated[str, typer.Option("--role", help=" | ".join(ROLES))],
    json_out: JsonOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """A new key of the tenant, printed once (the one key this CLI ever prints)."""
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}")
    api = run_api(lambda: client(profile))
    created = plain(run_api(lambda: api.keys.create(name=name, role=role)))
    if json_out:
        print_json(created)
    else:
        out.print(f"key {created.get('id')} ({escape(name)}, {role}); shown once, keep it safe:")
        sys.stdout.write(f"{created.get('key')}\n")


@keys_app.command("revoke")
def keys_revoke(key_id: str, json_out: JsonOpt = False, profile: ProfileOpt = None) -> None:
    """Revoke a key: refused from its next request on."""
    api = run_api(lambda: client(profile))
    run_api(lambda: api.keys.revoke(key_id))
    if json_out:
        print_json({"id": key_id, "revoked": True})
    else:
        out.print(f"key {escape(key_id)} revoked")


# --- dispatch ----------------------------------------------------------------------------------------------------

OPTIONS_WITH_VALUES = frozenset({"--name", "--role", "--profile"})
TENANT_KEYS_POSITIONALS = {"create": 0, "list": 0, "revoke": 1}


def tenant_keys(rest: Sequence[str]) -> bool:
    """Whether `aiaas keys REST` is the tenant's form over the API: it names no tenant (`keys create --name N
    --role R`, `keys list`, `keys revoke KEY_ID`); the operator's forms name one first (`keys list TENANT`)."""
    if not rest or rest[0] not in TENANT_KEYS_POSITIONALS:
        return False
    positionals, skip = 0, False
    for arg in rest[1:]:
        if skip:
            skip = False
        elif arg in OPTIONS_WITH_VALUES:
            skip = True
        elif not arg.startswith("-"):
            positionals += 1
    return positionals == TENANT_KEYS_POSITIONALS[rest[0]]


def handles(argv: Sequence[str]) -> bool:
    """Whether this module runs `aiaas ARGV` (the operator's commands stay with shared.cli)."""
    if not argv:
        return False
    return argv[0] in TENANT_COMMANDS or (argv[0] == "keys" and tenant_keys(argv[1:]))


def run(argv: Sequence[str]) -> int:
    """Runs one tenant command; its exit status."""
    try:
        app(args=list(argv), prog_name="aiaas")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


# --- the SDK's own `aiaas` ---------------------------------------------------------------------------------------

OWN_ENTRY_POINT = "aiaas_client.cli:main"


def platform_main() -> Callable[[], Any] | None:
    """The platform's `aiaas` (the superset: operator and tenant commands) when the platform is installed beside
    this SDK: both declare the script, and whichever was installed last wrote bin/aiaas."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="console_scripts", name="aiaas"):
        if entry.value.replace(" ", "") != OWN_ENTRY_POINT:
            try:
                found: Callable[[], Any] = entry.load()
            except ImportError:  # its metadata without its code (a stale install): the tenant's commands alone
                continue
            return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`aiaas` as `pip install "aiaas-client[cli]"` installs it: the tenant's commands only."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if argv is None and (platform := platform_main()) is not None:
        return int(platform() or 0)
    return run(arguments)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

"""The `aiaas` command: run the local platform, manage tenants and models, run the demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from shared.config import get_settings
from shared.services.platform import Platform


def _platform() -> Platform:
    from shared.bootstrap import get_platform

    return get_platform()


def _local_stack(workers: int | None = None) -> None:
    """The local stack is development by definition (Azurite, the Cosmos stand-in, the local broker)."""
    from shared import bootstrap

    os.environ["AIAAS_ENVIRONMENT"] = "development"
    # Local webhooks and model servers listen on loopback; export AIAAS_ALLOW_LOOPBACK_ENDPOINTS=false to try the
    # production policy locally.
    os.environ.setdefault("AIAAS_ALLOW_LOOPBACK_ENDPOINTS", "true")
    if workers is not None:  # also what the tenant limit derives from
        os.environ["AIAAS_WORKERS"] = str(workers)
    bootstrap.reset()


def cmd_up(args: argparse.Namespace) -> int:
    from shared.localhost.host import LocalHost

    _local_stack(args.workers)
    settings = get_settings()
    if args.regions:
        return _up_stamps(args, [region.strip() for region in args.regions.split(",")])
    host = LocalHost(settings, workers=args.workers, log_level=args.log_level, stand_ins_running=args.stand_ins_running)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with host:
        print(f"aiaas local platform up: API {host.api_url}  (Ctrl-C stops everything)", flush=True)
        blobs = (
            host.azurite.blob_endpoint if not args.stand_ins_running else "the parent's, account " + account_of(host)
        )
        print(
            f"  Azurite {blobs}  Cosmos {host.cosmos.endpoint}  "
            f"workers {len(host.worker_processes)}  data {settings.data_dir}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            host.wait(stop)
        print("stopping...", flush=True)
    if host.failure is not None:  # the platform stopped itself: a stand-in it cannot replace died
        print(f"error: {host.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def account_of(host: object) -> str:
    """The tenants' storage account a stamp's host uses (its connection string's AccountName)."""
    text = str(getattr(host, "storage_connection_string", ""))
    return next((part[12:] for part in text.split(";") if part.startswith("AccountName=")), "?")


def _up_stamps(args: argparse.Namespace, regions: list[str]) -> int:
    """`aiaas up --regions a,b`: one stamp per region side by side (shared.localhost.stamps)."""
    from shared.localhost.stamps import LocalStamps

    settings = get_settings()
    try:
        stamps = LocalStamps(settings, regions, workers=args.workers, log_level=args.log_level)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stamps.start()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    try:
        print(f"aiaas local stamps up: {len(stamps.stamps)} regions  (Ctrl-C stops everything)", flush=True)
        for stamp in stamps.stamps:
            print(
                f"  region {stamp.region}: API {stamp.api_url}  storage account {stamp.account}  "
                f"Cosmos database {stamp.database}",
                flush=True,
            )
        print(
            f"  Azurite {stamps.azurite.blob_endpoint}  Cosmos {stamps.cosmos.endpoint}  "
            f"directory database {settings.directory_database}  data {settings.data_dir}",
            flush=True,
        )
        print("  tenants: aiaas tenants create ID --region R", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stamps.wait(stop)
        print("stopping...", flush=True)
    finally:
        stamps.stop()
    if stamps.failure is not None:
        print(f"error: {stamps.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def _select_stamp(region: str | None) -> None:
    """With --region of another stamp of `aiaas up --regions` on this machine, the command acts on that stamp
    (its settings from the stamps file); anything else stays with this process's settings."""
    from shared import bootstrap
    from shared.localhost.stamps import stamp_environment

    settings = get_settings()
    if region is None or region == settings.region or not settings.is_development:
        return
    env = stamp_environment(settings.data_dir, region)
    if env is not None:
        os.environ.update(env)
        bootstrap.reset()


def _audit_operator(tenant_id: str, action: str, target: str, outcome: str) -> None:
    """An operator's change goes into the tenant's audit log like an API call (actor kind "operator")."""
    import uuid

    from shared.services import audit

    audit.record(
        _platform(),
        tenant_id,
        actor_kind="operator",
        actor_id=_operator().removeprefix("operator:"),
        action=action,
        target=target,
        outcome=outcome,
        request_id=uuid.uuid4().hex,
    )


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError
    from shared.services.regions import place_tenant
    from shared.services.tenants import create_tenant

    _select_stamp(args.region)
    try:
        # The directory first: it reserves the tenant for this stamp, so no other stamp can make it too.
        place_tenant(_platform(), args.tenant_id, args.region, entra_tenant=args.entra_tenant)
        api_key = create_tenant(_platform(), args.tenant_id, entra_tenant=args.entra_tenant)
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    _audit_operator(args.tenant_id, "tenants.create", f"tenants/{args.tenant_id}", "succeeded")
    if args.json:
        print(json.dumps({"tenantId": args.tenant_id, "apiKey": api_key}))
    else:
        print(f"tenant {args.tenant_id} created; its AIaaS.Admin API key (shown once, keep it safe):\n{api_key}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError
    from shared.services.tenants import create_key

    try:
        key, api_key = create_key(_platform(), args.tenant_id, args.name, args.role)
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    _audit_operator(args.tenant_id, "keys.create", f"keys/{key.key_id}", "succeeded")
    if args.json:
        print(json.dumps({**key.public_view(), "key": api_key}))
    else:
        print(f"key {key.key_id} ({key.name}, {key.role}) of {args.tenant_id}; shown once, keep it safe:\n{api_key}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError
    from shared.services.tenants import list_keys

    try:
        keys = list_keys(_platform(), args.tenant_id)
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    for key in keys:
        print(f"{key.key_id}\t{key.role}\t{key.created_at}\t{key.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError
    from shared.services.tenants import revoke_key

    try:
        revoke_key(_platform(), args.tenant_id, args.key_id)
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    _audit_operator(args.tenant_id, "keys.revoke", f"keys/{args.key_id}", "succeeded")
    print(f"key {args.key_id} of {args.tenant_id} revoked")
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    for tenant in _platform().tenants.list_tenants():
        print(f"{tenant.tenant_id}\t{tenant.status}\t{tenant.created_at}")
    return 0


def cmd_tenants_set_quota(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError
    from shared.services.quotas import set_quota

    try:
        limits = set_quota(
            _platform(),
            args.tenant_id,
            recordsPerDay=args.records_per_day,
            concurrentJobs=args.concurrent_jobs,
            maxFileBytes=args.max_file_bytes,
            requestsPerMinute=args.requests_per_minute,
        )
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    print(json.dumps({"tenantId": args.tenant_id, "quota": limits}))
    return 0


def _operator() -> str:
    import getpass

    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def cmd_models_list(args: argparse.Namespace) -> int:
    tags = dict(item.partition(":")[::2] for item in args.tag or [])
    for model in _platform().models.list_models(args.tenant or "", task=args.task, tags=tags or None):
        print(
            f"{model['name']}\t{model['task']}\t{model.get('visibility', 'public')}\t"
            f"versions={','.join(model['versions'])}\taliases={model['aliases']}"
        )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from shared.domain.errors import PlatformError

    models = _platform().models
    try:
        from shared.services.rollouts import present

        view = models.get_model(args.tenant or "", args.name)
        aliases = present(models.get_aliases(args.tenant or "", args.name))
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    # The rollouts with their evidence and gates: how an operator follows a built-in's canary.
    print(json.dumps({**view, "aliasHistory": aliases["history"], "rollouts": aliases["rollouts"]}, indent=2))
    return 0


def cmd_models_publish(args: argparse.Namespace) -> int:
    from shared.localhost.host import publish_models

    published = publish_models(_platform().models, Path(args.dir or get_settings().models_dir))
    print("published: " + (", ".join(published) if published else "nothing new"))
    return 0


def cmd_models_register(args: argparse.Namespace) -> int:
    """Publishes one built package dir, public or (with --tenant) as that tenant's private model."""
    from shared.domain.errors import PlatformError
    from shared.inference.registry import BlobModelRegistry

    registry = _platform().models
    if not isinstance(registry, BlobModelRegistry):
        print("error: this registry cannot publish packages", file=sys.stderr)
        return 1
    package = Path(args.package)
    try:
        uploaded = registry.publish_package(
            package, set_alias=None if args.no_alias else args.alias, by=args.by or _operator(), tenant=args.tenant
        )
        card = json.loads((package / "card.json").read_text())
    except (PlatformError, OSError, ValueError) as err:
        print(f"error: {getattr(err, 'message', err)}", file=sys.stderr)
        return 1
    owner = f" for tenant {args.tenant}" if args.tenant else ""
    state = "registered" if uploaded else "already registered (same artifact)"
    print(f"{card['name']}@{card['version']} {state}{owner}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    """Moves an alias to a version and records who and when; rolling back is promoting the previous version."""
    from shared.domain.errors import PlatformError

    models = _platform().models
    try:
        models.get_model(args.tenant or "", args.name)
        moved = models.move_alias(args.name, args.alias, args.version, by=args.by or _operator(), owner=args.tenant)
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    last = moved["history"][-1]
    print(f"{args.name}: {args.alias} {last['from'] or '(none)'} -> {last['to']} by {last['by']} at {last['at']}")
    return 0


def cmd_models_rollout(args: argparse.Namespace) -> int:
    """Sets an alias's rollout (a canary share of jobs with gates, a shadow) or ends it, and shows its state."""
    from shared.domain.errors import PlatformError
    from shared.services.rollouts import start_rollout

    canary = None
    if args.canary_version:
        if args.percent is None:
            print("error: --canary-version needs --percent (1-99)", file=sys.stderr)
            return 1
        gates = {
            "maxErrorRate": args.max_error_rate,
            "maxSecondsPerRecord": args.max_seconds_per_record,
            "maxDriftShare": args.max_drift_share,
            "noDrift": True if args.no_drift else None,
            "minAgreement": args.min_agreement,
        }
        evidence = {"jobs": args.evidence_jobs, "records": args.evidence_records}
        canary = {
            "version": args.canary_version,
            "percent": args.percent,
            "gates": {k: v for k, v in gates.items() if v is not None},
            "evidence": {k: v for k, v in evidence.items() if v is not None},
        }
    shadow = {"version": args.shadow_version} if args.shadow_version else None
    if canary is None and shadow is None and not args.end:
        print("error: give --canary-version/--percent, --shadow-version, or --end", file=sys.stderr)
        return 1
    try:
        view = start_rollout(
            _platform(),
            owner=args.tenant,
            name=args.name,
            alias=args.alias,
            canary=canary,
            shadow=shadow,
            by=args.by or _operator(),
        )
    except PlatformError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    if args.tenant:  # a tenant's model changed by the operator: in that tenant's audit log
        _audit_operator(args.tenant, "models.rollout", f"models/{args.name}/aliases/{args.alias}", "succeeded")
    state = view["rollouts"].get(args.alias)
    if args.json:
        print(json.dumps({"alias": args.alias, "version": view["aliases"].get(args.alias), "rollout": state}))
    elif state is None:
        print(f"{args.name}: {args.alias} is {view['aliases'].get(args.alias)}, no rollout")
    else:
        parts = [f"{args.name}: {args.alias} stable {state['stableVersion']}"]
        if state.get("canary"):
            c = state["canary"]
            parts.append(f"canary {c['version']} on {c['percent']}% of jobs, gates {c['gates'] or 'none'}")
            parts.append(f"promoted after {c['evidence']['jobs']} jobs and {c['evidence']['records']} records")
        if state.get("shadow"):
            parts.append(f"shadow {state['shadow']['version']}")
        print("; ".join(parts))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.localhost.demo import run_demo

    _local_stack(args.workers)
    return run_demo(workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiaas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the local platform in the foreground until Ctrl-C")
    up.add_argument("--workers", type=int, default=None, help="worker processes (default AIAAS_WORKERS)")
    up.add_argument("--log-level", default="WARNING")
    up.add_argument(
        "--regions", metavar="A,B", help="run one stamp per region side by side (their APIs on AIAAS_API_PORT, +1, ...)"
    )
    # A stamp of `--regions`: the parent's stand-ins are up already at the settings' ports.
    up.add_argument("--stand-ins-running", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    create = tenants.add_parser("create", help="create a tenant and print its API key once")
    create.add_argument("tenant_id")
    create.add_argument("--json", action="store_true", help='print {"tenantId": ..., "apiKey": ...}')
    create.add_argument("--entra-tenant", metavar="TID", help="Entra ID tokens of this tid act for the tenant")
    create.add_argument(
        "--region", help="the tenant's home region: made only in that stamp (default: this stamp's AIAAS_REGION)"
    )
    create.set_defaults(func=cmd_tenants_create)
    tenants.add_parser("list", help="list tenants").set_defaults(func=cmd_tenants_list)
    set_quota = tenants.add_parser("set-quota", help="a tenant's own limits (0: no limit; unset: unchanged)")
    set_quota.add_argument("tenant_id")
    for flag in ("records-per-day", "concurrent-jobs", "max-file-bytes", "requests-per-minute"):
        set_quota.add_argument(f"--{flag}", type=int, metavar="N")
    set_quota.set_defaults(func=cmd_tenants_set_quota)

    keys = sub.add_parser(
        "keys",
        help="a tenant's API keys (operator: keys create TENANT ...; naming no TENANT acts over the API with "
        "AIAAS_API_KEY: keys create --name N --role R, keys list, keys revoke KEY_ID)",
        # `aiaas keys --help` reaches this parser, not the tenant's: it names both forms.
        description="A tenant's API keys. The operator's forms name the TENANT and act on the platform's store: "
        "keys create TENANT --name N --role R, keys list TENANT, keys revoke TENANT KEY_ID. The tenant's forms name "
        "none and act over the HTTP API with AIAAS_API_URL and AIAAS_API_KEY (or --profile): "
        "keys create --name N --role R [--json], keys list [--json], keys revoke KEY_ID "
        "(aiaas keys create --help shows the tenant's options).",
    ).add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="a new key with a role (printed once)")
    key_create.add_argument("tenant_id")
    key_create.add_argument("--name", required=True)
    key_create.add_argument("--role", required=True, choices=["AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin"])
    key_create.add_argument("--json", action="store_true", help='print {"id", "key", "name", "role", "createdAt"}')
    key_create.set_defaults(func=cmd_keys_create)
    key_list = keys.add_parser("list", help="the tenant's keys (no secrets)")
    key_list.add_argument("tenant_id")
    key_list.set_defaults(func=cmd_keys_list)
    key_revoke = keys.add_parser("revoke", help="revoke a key: refused from the next request on")
    key_revoke.add_argument("tenant_id")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(func=cmd_keys_revoke)

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="action", required=True)
    listing = models.add_parser("list", help="models (public, plus a tenant's own with --tenant)")
    listing.add_argument("--tenant")
    listing.add_argument("--task")
    listing.add_argument("--tag", action="append", help="k:v, repeatable; all must match")
    listing.set_defaults(func=cmd_models_list)
    show = models.add_parser("show", help="one model with its card and alias history")
    show.add_argument("name")
    show.add_argument("--tenant")
    show.set_defaults(func=cmd_models_show)
    publish = models.add_parser("publish", help="upload built packages to the registry")
    publish.add_argument("--dir", default=None, help="the built packages (default AIAAS_MODELS_DIR)")
    publish.set_defaults(func=cmd_models_publish)
    register = models.add_parser("register", help="publish one package dir (card.json + artifact)")
    register.add_argument("--package", required=True, help="the package dir (card.json, artifact, files)")
    register.add_argument("--tenant", help="register it as this tenant's private model (checked by loading it)")
    register.add_argument("--alias", default="production", help="alias to point at it if the alias is unset")
    register.add_argument("--no-alias", action="store_true", help="set no alias")
    register.add_argument("--by", help="who registers it (default operator:<user>)")
    register.set_defaults(func=cmd_models_register)
    promote = models.add_parser("promote", help="move an alias to a version (roll back: the previous version)")
    promote.add_argument("name")
    promote.add_argument("alias")
    promote.add_argument("version")
    promote.add_argument("--by", help="who moves it (default operator:<user>)")
    promote.add_argument("--tenant", help="a tenant's private model")
    promote.set_defaults(func=cmd_models_promote)
    rollout = models.add_parser(
        "rollout", help="canary and/or shadow an alias: the gates promote or roll back by themselves"
    )
    rollout.add_argument("name")
    rollout.add_argument("--alias", default="production")
    rollout.add_argument("--canary-version", help="the version a share of the alias's jobs runs")
    rollout.add_argument("--percent", type=int, help="that share, 1-99 (chosen by job id)")
    rollout.add_argument("--shadow-version", help="a version also run on the same records, compared, never returned")
    rollout.add_argument("--max-error-rate", type=float, help="gate: failed records / records (0-1)")
    rollout.add_argument("--max-seconds-per-record", type=float, help="gate: model seconds per record")
    rollout.add_argument("--max-drift-share", type=float, help="gate: drifted canary jobs / jobs (0-1)")
    rollout.add_argument("--no-drift", action="store_true", help="gate: any drifted canary job rolls back")
    rollout.add_argument("--min-agreement", type=float, help="gate: agreement with the stable version (0-1)")
    rollout.add_argument("--evidence-jobs", type=int, help="canary jobs before promotion (default 3)")
    rollout.add_argument("--evidence-records", type=int, help="canary records before promotion (default 300)")
    rollout.add_argument("--end", action="store_true", help="end the alias's rollout (the alias stays)")
    rollout.add_argument("--tenant", help="a tenant's private model")
    rollout.add_argument("--by", help="who sets it (default operator:<user>)")
    rollout.add_argument("--json", action="store_true")
    rollout.set_defaults(func=cmd_models_rollout)

    # The tenant's commands (aiaas_client/cli.py in clients/python, over the HTTP API) are run before this parser
    # sees them: listed here for `aiaas --help`.
    for name, text in (
        ("jobs", "tenant: submit files (--wait), list, show, results, errors, cancel jobs over the API"),
        ("events", "tenant: follow the tenant's events (events tail)"),
        ("usage", "tenant: metered usage and quota"),
        ("subscriptions", "tenant: webhook and callback subscriptions, dead letters, redelivery"),
    ):
        sub.add_parser(name, help=text, add_help=False)

    demo = sub.add_parser("demo", help="start a throwaway local stack, run sample jobs end to end, stop")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in {"jobs", "events", "usage", "subscriptions", "keys"}:
        from aiaas_client import cli as tenant_cli  # typer, rich and the SDK: only for what may be the tenant's

        if tenant_cli.handles(arguments):  # the tenant's commands, over the HTTP API
            return tenant_cli.run(arguments)
    args = build_parser().parse_args(arguments)
    # The CLI is the operator's tool on a machine running the local stack: development unless told otherwise
    # (against Azure, export AIAAS_ENVIRONMENT=production with the stamp's settings). The platform itself
    # defaults to production.
    os.environ.setdefault("AIAAS_ENVIRONMENT", "development")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

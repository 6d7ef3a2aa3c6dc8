"""The connector for your platform host (a checked copy to import), and a local stand-in for a Logic App's callback."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
FILES = ("apiDefinition.swagger.json", "apiProperties.json", "icon.png")
SCHEMAS = {  # what paconn checks each file against (copies in schemas/, see its README.md)
    "apiDefinition.swagger.json": "powerplatform-apiDefinition.swagger.schema.json",
    "apiProperties.json": "powerplatform-apiProperties.schema.json",
}


def load_jsonc(path: Path) -> Any:
    """A JSONC file (the Power Platform schemas are) as JSON: every `//` outside a string dropped to its line's end."""
    lines = []
    for line in path.read_text().splitlines():
        kept, in_string, i = [], False, 0
        while i < len(line):
            char = line[i]
            if in_string and char == "\\":
                kept.append(line[i : i + 2])
                i += 2
                continue
            if char == '"':
                in_string = not in_string
            elif not in_string and line.startswith("//", i):
                break
            kept.append(char)
            i += 1
        lines.append("".join(kept))
    return json.loads("\n".join(lines))


def for_host(api_url: str, out: Path) -> dict[str, Any]:
    """Writes the connector's files into `out` with the definition's scheme, host and basePath taken from
    `api_url` (the platform's API URL, e.g. https://func-abc123.azurewebsites.net/api), and checks both JSON files
    against the Power Platform schemas. Returns what it wrote; raises ValueError when a file fails its schema."""
    import jsonschema  # a dev dependency (make installs it); only this command needs it

    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not an API URL such as https://<host>/api: {api_url!r}")
    definition = json.loads((HERE / "apiDefinition.swagger.json").read_text())
    definition["schemes"] = [parts.scheme]
    definition["host"] = parts.netloc
    definition["basePath"] = parts.path.rstrip("/") or "/"
    out.mkdir(parents=True, exist_ok=True)
    (out / "apiDefinition.swagger.json").write_text(json.dumps(definition, indent=2) + "\n")
    for name in FILES[1:]:
        shutil.copyfile(HERE / name, out / name)
    for name, schema_file in SCHEMAS.items():
        schema = load_jsonc(HERE / "schemas" / schema_file)
        validator = jsonschema.validators.validator_for(schema)(schema)
        problems = [
            f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(json.loads((out / name).read_text()))
        ]
        if problems:
            raise ValueError(f"{out / name} fails {schema_file}: {problems[:5]}")
    base = f"{parts.scheme}://{parts.netloc}{definition['basePath']}"
    return {"directory": str(out), "files": list(FILES), "baseUrl": base, "powerPlatformSchemas": "valid"}


def callback(events: Path) -> None:
    """Plays a Logic App's callback URL on a free loopback port until stopped (or the shell that started it ends):
    prints the URL, answers 202 to every request without echoing anything, and appends each JSON body POSTed to it
    to `events`, one line each (the file rewritten whole each time)."""
    from shared.localhost.logicapps_callback import LogicAppsCallback
    from shared.localhost.webhook_endpoint import keep_events, while_the_shell_lives

    with LogicAppsCallback() as receiver:
        print(receiver.url, flush=True)
        written = 0
        for _ in while_the_shell_lives():
            arrived = receiver.wait_for(written + 1, timeout=1)
            if len(arrived) > written:
                keep_events(events, arrived)
                written = len(arrived)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    host = commands.add_parser("for-host", help="write the connector's files for your platform's API URL, checked")
    host.add_argument("api_url", help="the platform's API URL, e.g. https://func-abc123.azurewebsites.net/api")
    host.add_argument("--out", type=Path, required=True, help="directory to write the files into")
    local = commands.add_parser("callback", help="a local stand-in for a Logic App's callback URL (loopback)")
    local.add_argument("--events", type=Path, required=True, help="file each received event is appended to")
    args = parser.parse_args(argv)
    if args.command == "for-host":
        try:
            print(json.dumps(for_host(args.api_url, args.out)))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        callback(args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())

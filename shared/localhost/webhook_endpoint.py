"""`python -m shared.localhost.webhook_endpoint`: a loopback webhook endpoint for a shell (the docs' samples)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.localhost.webhook_receiver import WebhookReceiver

# What a delivery gets when the answer file holds no HTTP status: the endpoint is broken, so a retried failure.
BROKEN_ANSWER = 503
# Reads of an empty answer file before it counts as none (10 ms apart).
EMPTY_READS = 5


def read_answer(answer_from: Path | None) -> int:
    """The HTTP status the next delivery gets: the number in `answer_from`, 200 while that file is missing or empty."""
    if answer_from is None:
        return 200
    text = ""
    for _ in range(EMPTY_READS):  # `echo 400 > answer` truncates the file before it writes: an empty read may be that
        try:
            text = answer_from.read_text().strip()
        except FileNotFoundError:
            return 200
        if text:
            break
        time.sleep(0.01)
    if not text:
        return 200
    if not text.isdigit() or not 200 <= int(text) <= 599:
        print(f"{answer_from} holds {text!r}, not an HTTP status: answering {BROKEN_ANSWER}", file=sys.stderr)
        return BROKEN_ANSWER
    return int(text)


class SteeredReceiver(WebhookReceiver):
    """A WebhookReceiver that reads its answer to each delivery from a file at that moment, so that a shell can
    switch it (`echo 400 > answer`) with no race against a delivery on its way; the handshake is always answered."""

    def __init__(self, answer_from: Path | None) -> None:
        super().__init__()
        self._answer_from = answer_from

    def _decide(self) -> tuple[int | None, float]:
        self.answer_status = read_answer(self._answer_from)
        return super()._decide()


def while_the_shell_lives() -> Iterator[None]:
    """Yields until the process that started this one ends: a stand-in run from a shell (a docs sample) stops
    when that shell is gone, killed or not, so nothing outlives it."""
    parent = os.getppid()
    while os.getppid() == parent:
        yield


def keep_events(path: Path, events: list[Any]) -> None:
    """`events` as JSON lines in `path`, whole lines only and at once: a reader polling it never sees half one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(event) + "\n" for event in events))
    partial.replace(path)


def serve(events: Path, answer_from: Path | None) -> None:
    """Serves on a free loopback port until the shell that started it ends: prints the URL on stdout, one line per
    handshake and delivery on stderr, and keeps every event it accepted (2xx) in `events`, one JSON line each."""
    with SteeredReceiver(answer_from) as receiver:
        print(receiver.url, flush=True)
        written = handshakes = logged = 0
        for _ in while_the_shell_lives():
            receiver.wait_until(functools.partial(_more, receiver.deliveries, logged), timeout=1)
            validations = [r for r in list(receiver.requests) if _is_handshake(r["headers"])]
            for _ in validations[handshakes:]:
                print("validation handshake: answered with its validationCode", file=sys.stderr, flush=True)
            handshakes = len(validations)
            for delivery in receiver.deliveries[logged:]:
                print(
                    f"delivery of event {', '.join(map(str, delivery['eventIds']))}"
                    f" (aeg-delivery-count {delivery['deliveryCount']}): answered {delivery['status']}",
                    file=sys.stderr,
                    flush=True,
                )
            logged = len(receiver.deliveries)
            if len(receiver.events) > written:
                arrived = list(receiver.events)
                keep_events(events, arrived)
                written = len(arrived)


def _more(items: list[dict[str, Any]], seen: int) -> bool:
    return len(items) > seen


def _is_handshake(headers: dict[str, str]) -> bool:
    return any(k.lower() == "aeg-event-type" and v == "SubscriptionValidation" for k, v in headers.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A local webhook endpoint on loopback that answers Event Grid's validation handshake."
    )
    parser.add_argument("--events", type=Path, required=True, help="file the accepted events are written to")
    parser.add_argument(
        "--answer-from",
        type=Path,
        default=None,
        help="file holding the HTTP status each delivery gets, read at each delivery (missing or empty: 200)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        serve(args.events, args.answer_from)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Readiness: each dependency the platform needs (Blob, Cosmos, the queue) probed once, in parallel, time-bounded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

logger = logging.getLogger(__name__)
# Well inside a platform probe's own timeout (App Service health check: 2 min; a load balancer: seconds).
READY_TIMEOUT_SECONDS = 5.0


def check_ready(
    probes: Mapping[str, Callable[[], object]], *, timeout_seconds: float = READY_TIMEOUT_SECONDS
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """(all ready, per check {"status": "ok"|"failed"|"timeout", "error"?: the exception's type}).

    What a failed probe said stays in the log: its message may name a host, an account or a key's scope.
    """
    checks: dict[str, dict[str, Any]] = {}
    if not probes:
        return True, checks
    # Not a `with` block: its exit would wait for a probe that hangs past the timeout.
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="ready-probe")
    try:
        started = time.monotonic()
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        for name, future in futures.items():
            left = max(0.0, timeout_seconds - (time.monotonic() - started))
            try:
                future.result(timeout=left)
                checks[name] = {"status": "ok"}
            except FutureTimeout:
                logger.warning("readiness: %s did not answer within %.1fs", name, timeout_seconds)
                checks[name] = {"status": "timeout"}
            except Exception as err:
                logger.warning("readiness: %s failed", name, exc_info=True)
                checks[name] = {"status": "failed", "error": type(err).__name__}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return all(check["status"] == "ok" for check in checks.values()), checks

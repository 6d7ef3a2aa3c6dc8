"""Trigger: a timer -> sweep jobs whose shards stopped moving (re-drive them, or fail them with a reason)."""

from __future__ import annotations

from datetime import timedelta

import azure.functions as func

from shared.bootstrap import get_platform
from shared.config import get_settings
from shared.services.sweeper import sweep

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("sweep_jobs")
@bp.timer_trigger(arg_name="timer", schedule="0 */2 * * * *", run_on_startup=False)
def sweep_jobs(timer: func.TimerRequest) -> None:
    settings = get_settings()
    sweep(get_platform(), stalled_after=timedelta(seconds=settings.stall_seconds), max_sweeps=settings.max_sweeps)

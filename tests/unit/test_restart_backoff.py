"""How long the local host waits before it starts a dead child again, and how it says how the child died."""

from __future__ import annotations

import signal

from shared.localhost.host import RestartBackoff, describe_exit


def test_a_child_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    backoff = RestartBackoff(first=0.5, cap=30.0, healthy=5.0)
    delays = [backoff.after_death(uptime=1.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_child_that_stayed_up_a_while_is_replaced_after_the_first_delay_again() -> None:
    backoff = RestartBackoff(first=0.5, cap=30.0, healthy=5.0)
    for _ in range(5):
        backoff.after_death(uptime=0.2)
    assert backoff.after_death(uptime=5.0) == 0.5
    assert backoff.after_death(uptime=0.2) == 1.0


def test_the_death_is_described_by_its_signal_or_exit_status() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(1) == "exited with status 1"

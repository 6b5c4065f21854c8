"""The driver's handling of signals (koelectra_dist.ray_runtime)."""

from __future__ import annotations

import os
import signal

import pytest

from koelectra_dist.ray_runtime import stop_on_sigterm


def test_sigterm_runs_the_ctrl_c_handler_in_force_when_it_arrives():
    """`ray job stop` sends SIGTERM; Ray Train's graceful abort (which withdraws the run's
    autoscaling request) is installed as the SIGINT handler during fit(), so SIGTERM must reach it."""
    seen: list[int] = []
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # installed later, as fit() does
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        signal.signal(signal.SIGINT, signal.default_int_handler)  # outside a run: it interrupts
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])

"""Every test's wall-clock timeout (pytest-timeout, `timeout` in pyproject), made safe for trio.

pytest-timeout's signal method raises `Failed` wherever SIGALRM finds the main thread. In a
trio test that is often trio's own run loop (asleep in `epoll` while the test awaits what
never comes), and an exception there breaks the run and leaves trio's state behind: every
trio test after it then fails with "Attempted to call run() from inside a run()". So while
a trio test's body runs, the alarm cancels the body instead, through a cancel scope
(`TrioToken.run_sync_soon` may be called from a signal handler): the test fails with the
traceback of the await where it hung, its fixtures tear down, and trio ends cleanly. A body
that reaches no checkpoint within `GRACE_S` of that (a loop with no await), and a hang in a
fixture, get pytest-timeout's own failure.
"""

from __future__ import annotations

import functools
import signal
from typing import TYPE_CHECKING, Any

import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from types import FrameType

pytest_plugins = ["pytester"]  # tests/test_timeout.py runs this file in a pytest of its own

#: How long a cancelled test body has to unwind before pytest-timeout's own alarm handler
#: raises where it stands. Unwinding takes milliseconds; this only has to be far from that.
GRACE_S = 10.0
TIMED_OUT = "Timeout (pytest-timeout): cancelled, the Cancelled above shows where it waited"


def _cancel_on_alarm(test: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def guarded(**kwargs: Any) -> None:
        token = trio.lowlevel.current_trio_token()
        previous = signal.getsignal(signal.SIGALRM)
        with trio.CancelScope() as scope:

            def on_alarm(signum: int, frame: FrameType | None) -> None:
                signal.signal(signal.SIGALRM, previous)  # the next alarm: pytest-timeout's
                signal.setitimer(signal.ITIMER_REAL, GRACE_S)
                token.run_sync_soon(scope.cancel)

            signal.signal(signal.SIGALRM, on_alarm)
            try:
                await test(**kwargs)
            except BaseException as exc:
                if scope.cancel_called:
                    raise pytest.fail.Exception(TIMED_OUT) from exc
                raise
            finally:
                signal.signal(signal.SIGALRM, previous)
        if scope.cancel_called:
            pytest.fail(TIMED_OUT)

    return guarded


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """Wrap a trio test's body before pytest-trio hands it to `trio.run`."""
    if (
        isinstance(item, pytest.Function)
        and item.get_closest_marker("trio") is not None
        and not hasattr(item.obj, "hypothesis")
    ):
        item.obj = _cancel_on_alarm(item.obj)
    return (yield)

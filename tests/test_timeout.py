"""A test that hangs fails after its wall-clock timeout, and the run goes on (tests/conftest.py).

Run in a pytest of its own, with this repository's conftest and a 1-second timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

HANGING = """
import trio
import trio.testing


async def test_waits_for_what_never_comes(autojump_clock: trio.testing.MockClock) -> None:
    await trio.Event().wait()


async def test_spins_at_one_instant(autojump_clock: trio.testing.MockClock) -> None:
    while True:
        await trio.lowlevel.checkpoint()


async def test_hangs_in_a_nursery() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep_forever()


async def test_after_them_trio_still_runs() -> None:
    await trio.sleep(0)


def test_a_plain_test_that_hangs() -> None:
    import time

    while True:
        time.sleep(0.01)
"""


def test_hung_trio_tests_fail_with_where_they_waited_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\ntrio_mode = true\ntimeout = 1\n")
    pytester.makepyfile(test_hangs=HANGING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_hangs.py::test_waits_for_what_never_comes - *Timeout*",
            "FAILED test_hangs.py::test_spins_at_one_instant - *Timeout*",
            "FAILED test_hangs.py::test_hangs_in_a_nursery - *Timeout*",
            "FAILED test_hangs.py::test_a_plain_test_that_hangs - *Timeout*",
        ],
        consecutive=False,
    )
    # the traceback names the await where the first test waited
    result.stdout.fnmatch_lines(
        ["*in test_waits_for_what_never_comes", "*await trio.Event().wait()"]
    )

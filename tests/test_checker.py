"""The Reconnector's gap and duplicate checker, on crafted streams."""

from __future__ import annotations

from loadtests.checker import StreamChecker


def test_a_gapless_stream_across_a_resume_is_clean() -> None:
    checker = StreamChecker()
    for seq in (1, 2, 3):
        assert checker.seen("c", seq) is None
    assert checker.resume_from("c") == 3
    for seq in (4, 5):  # what sync returns after the reconnect
        assert checker.seen("c", seq) is None
    assert (checker.gaps, checker.duplicates) == ([], [])


def test_a_skipped_seq_is_a_gap() -> None:
    checker = StreamChecker()
    checker.seen("c", 1)
    assert checker.seen("c", 3) == "gap in c: expected #2, got #3"
    assert checker.gaps == [("c", 2, 3)]
    assert checker.seen("c", 4) is None  # it goes on from what it saw


def test_a_repeated_seq_is_a_duplicate() -> None:
    checker = StreamChecker()
    checker.seen("c", 1)
    checker.seen("c", 2)
    assert checker.seen("c", 2) == "duplicate c#2"
    assert checker.seen("other", 7) is None  # conversations are separate

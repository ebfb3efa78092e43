"""Shorthands for driving the core in tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imcore.core import Chat, Deliveries, Limits, Outcome

if TYPE_CHECKING:
    from imcore.core.frames import GroupCommand, Read, Send

SECRET = "test-secret-that-is-long-enough-for-hs256"


def commit(chat: Chat, outcome: Outcome) -> Deliveries | None:
    """Apply an outcome's record at once, as a commit that always succeeds."""
    assert outcome.record is not None
    return chat.apply(outcome.record)


def do(
    chat: Chat, user: str, cmd: Send | Read | GroupCommand, now_ms: int = 0, device: str = "d1"
) -> Outcome:
    """Submit and commit one write."""
    outcome = chat.submit(user, device, cmd, now_ms)
    if outcome.record is not None:
        chat.apply(outcome.record)
    return outcome


def new_chat(**limits: int) -> Chat:
    return Chat(Limits(**limits))

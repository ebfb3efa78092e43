"""The protocol's error and close codes, one exception class per error code.

Pure: raised anywhere in the core, turned into an `error` frame only in `Session.handle`.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import ClassVar

#: The type of a client frame's `id` (spec §1): an integer or a short string.
FrameId = int | str | None


class ErrorCode(StrEnum):
    """The `code` of an `error` frame (spec §10)."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_OP = "unknown_op"
    INVALID = "invalid"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    LIMIT = "limit"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (spec §10)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    TIMEOUT = 4000
    UNAUTHORIZED = 4001
    ABUSE = 4002
    REPLACED = 4003
    SLOW_CONSUMER = 4008
    LIMIT = 4029


class ImcoreError(Exception):
    """A request the protocol refuses; its class names the wire code.

    Attributes:
        message: human-readable text for the `error` frame.
        frame_id: the `id` of the offending frame, when the codec could read it.
    """

    code: ClassVar[ErrorCode]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.frame_id: FrameId = None


class BadFrame(ImcoreError):
    code = ErrorCode.BAD_FRAME


class UnknownOp(ImcoreError):
    code = ErrorCode.UNKNOWN_OP


class Invalid(ImcoreError):
    code = ErrorCode.INVALID


class Unauthorized(ImcoreError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ImcoreError):
    code = ErrorCode.FORBIDDEN


class NotFound(ImcoreError):
    code = ErrorCode.NOT_FOUND


class Conflict(ImcoreError):
    code = ErrorCode.CONFLICT


class TooLarge(ImcoreError):
    code = ErrorCode.TOO_LARGE


class Limit(ImcoreError):
    code = ErrorCode.LIMIT


class RateLimited(ImcoreError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_ms: int) -> None:
        super().__init__(message)
        self.retry_ms = retry_ms


class Unavailable(ImcoreError):
    code = ErrorCode.UNAVAILABLE


class Internal(ImcoreError):
    code = ErrorCode.INTERNAL


#: Errors that count towards the abuse limit (spec §10: close 4002).
ABUSE_CODES = frozenset({ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP, ErrorCode.INVALID})

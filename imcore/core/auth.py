"""HS256 client tokens (spec §3): mint and verify, with the time passed in.

Pure: no clock reads. PyJWT does the signature; expiry is checked here against `now_ms`.
"""

from __future__ import annotations

import jwt

from . import ids
from .errors import Invalid, Unauthorized

ALGORITHM = "HS256"


def mint(user: str, secret: str, *, now_ms: int, ttl_s: int = 3600, **claims: object) -> str:
    """A token for `user` that expires `ttl_s` seconds after `now_ms`."""
    now_s = now_ms // 1000
    payload = {"sub": user, "iat": now_s, "exp": now_s + ttl_s, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_admin(token: str, secret: str, *, now_ms: int) -> str:
    """Check an operator's token: valid as `verify` requires, and with claim `admin: true`.

    Raises:
        Unauthorized: not a valid token, or not an admin's.
    """
    user = verify(token, secret, now_ms=now_ms)
    claims = jwt.decode(token, options={"verify_signature": False})
    if claims.get("admin") is not True:
        raise Unauthorized("not an admin token (mint one with imcore-admin token --admin)")
    return user


def verify(token: str, secret: str, *, now_ms: int) -> str:
    """Check a token's signature and expiry.

    Returns:
        The user id in its `sub` claim.

    Raises:
        Unauthorized: bad signature, malformed, expired, or a missing/invalid `sub` or `exp`.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={
                "require": ["exp", "sub"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"bad token: {exc}") from None
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp * 1000 <= now_ms:
        raise Unauthorized("token expired")
    try:
        return ids.user_id(claims["sub"], "sub")
    except Invalid:
        raise Unauthorized("token sub is not a valid user id") from None

"""Who is connected and who watches them (spec §3, §9). Pure: no I/O.

spec §3: one live connection per (user, device), a newer one replaces it; at most
`max_devices` per user. spec §9: a user is online while any device is connected;
`last_seen` is when they last came online (while online) or went offline (after).
Watchers are indexed by the watched user, so a change is one lookup however many watch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Limit
from .frames import Presence as PresenceFrame

if TYPE_CHECKING:
    from collections.abc import Iterable


class Presence:
    """Live sessions by user and device, and the watch lists of sessions.

    Args:
        max_devices: live connections allowed per user.
        max_watch: users one session may watch at once.
    """

    __slots__ = ("_last_seen", "_live", "_watchers", "_watching", "max_devices", "max_watch")

    def __init__(self, max_devices: int, max_watch: int) -> None:
        self.max_devices = max_devices
        self.max_watch = max_watch
        self._live: dict[str, dict[str, str]] = {}  # user -> device -> session id
        self._last_seen: dict[str, int] = {}
        self._watchers: dict[str, set[str]] = {}  # watched user -> session ids
        self._watching: dict[str, set[str]] = {}  # session id -> watched users

    def connect(self, user: str, device: str, session: str, now_ms: int) -> tuple[str | None, bool]:
        """Register a new live session.

        Returns:
            (the session it replaces on the same device, if any: close that one 4003;
            whether the user just came online).

        Raises:
            Limit: the user already has `max_devices` other live devices.
        """
        devices = self._live.get(user, {})
        if device not in devices and len(devices) >= self.max_devices:
            raise Limit(f"at most {self.max_devices} devices may be connected at once")
        replaced = devices.get(device)
        came_online = not devices
        self._live.setdefault(user, {})[device] = session
        if came_online:
            self._last_seen[user] = now_ms
        return replaced, came_online

    def disconnect(self, user: str, device: str, session: str, now_ms: int) -> bool:
        """Forget a session that ended, and its watch list.

        Returns:
            Whether the user went offline (their last device left).
        """
        for watched in self._watching.pop(session, ()):
            self._unwatch_one(session, watched)
        devices = self._live.get(user)
        if devices is None or devices.get(device) != session:
            return False  # replaced by a newer session on that device
        del devices[device]
        if devices:
            return False
        del self._live[user]
        self._last_seen[user] = now_ms
        return True

    def state(self, user: str) -> PresenceFrame:
        """The `presence` push for `user` as of now."""
        return PresenceFrame(
            user=user, online=user in self._live, last_seen=self._last_seen.get(user)
        )

    def watch(self, session: str, users: tuple[str, ...]) -> list[PresenceFrame]:
        """Start watching `users`; returns their current presence (spec §9: once on watch).

        Raises:
            Limit: the session would watch more than `max_watch` users.
        """
        mine = self._watching.get(session, set())
        if len(mine | set(users)) > self.max_watch:
            raise Limit(f"a connection may watch at most {self.max_watch} users")
        self._watching[session] = mine
        for u in users:
            mine.add(u)
            self._watchers.setdefault(u, set()).add(session)
        return [self.state(u) for u in users]

    def unwatch(self, session: str, users: tuple[str, ...]) -> None:
        mine = self._watching.get(session, set())
        for u in users:
            if u in mine:
                mine.discard(u)
                self._unwatch_one(session, u)

    def _unwatch_one(self, session: str, user: str) -> None:
        watchers = self._watchers.get(user)
        if watchers is not None:
            watchers.discard(session)
            if not watchers:
                del self._watchers[user]

    def watchers(self, user: str) -> frozenset[str]:
        """Sessions watching `user`."""
        return frozenset(self._watchers.get(user, ()))

    def sessions(self, users: Iterable[str]) -> list[str]:
        """The live sessions of `users`, every device."""
        live = self._live
        return [s for u in users if (devices := live.get(u)) for s in devices.values()]

    def online(self, user: str) -> bool:
        return user in self._live

    def online_count(self) -> int:
        """Users with at least one live device."""
        return len(self._live)

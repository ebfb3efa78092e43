"""Group rosters and roles as a fold over the membership events of a log. Pure: no I/O.

Theory of operation
-------------------

A group's roster is never edited directly. Every change is an event in the conversation's
log (spec §5) carrying a `SysChange`, and the roster after event N is

    fold(roster after N-1, change N)

so "who are the members at seq N" is a pure function of the log (`members_at`). Two
rosters are kept per group by `Chat`: the *staged* one, folded at sequencing time, against
which new commands are checked (a `group.add` may be followed by a send from the new member
before either is committed), and the *committed* one, folded at apply time, which readers
and the fan-out see.

Who receives event N (spec §5): the members after N, plus the users N removed, so a removed
member learns of its removal. `SysChange.joined()` and `left()` give the fan-out tables the
deltas to apply before and after pushing N.

Checks raise before anything changes:

    create   existing group                         -> Conflict
             more than max_group_members            -> Limit
    add      actor not owner/admin                  -> Forbidden
             user already a member                  -> Conflict
    remove   actor not owner/admin; the owner; an
             admin removed by an admin              -> Forbidden
             user not a member                      -> NotFound
    join     group not public                       -> Forbidden
             already a member                       -> Conflict
    leave    not a member; owner with others left   -> Forbidden
    role     actor not the owner; target the owner -> Forbidden
             target not a member                    -> NotFound
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Conflict, Forbidden, Limit, NotFound
from .frames import (
    GroupAdd,
    GroupCommand,
    GroupCreate,
    GroupJoin,
    GroupLeave,
    GroupRemove,
    GroupRole,
    SysChange,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

OWNER, ADMIN, MEMBER = "owner", "admin", "member"
_MANAGERS = frozenset({OWNER, ADMIN})


class Roster:
    """A group's members with their roles, its owner, title and visibility."""

    __slots__ = ("owner", "public", "roles", "title")

    def __init__(self) -> None:
        self.owner: str | None = None
        self.title: str | None = None
        self.public = False
        self.roles: dict[str, str] = {}

    def copy(self) -> Roster:
        twin = Roster()
        twin.owner, twin.title, twin.public = self.owner, self.title, self.public
        twin.roles = dict(self.roles)
        return twin

    def __contains__(self, user: object) -> bool:
        return user in self.roles

    def __len__(self) -> int:
        return len(self.roles)

    def check(self, actor: str, cmd: GroupCommand, max_members: int) -> SysChange:
        """Validate `cmd` by `actor` against this roster and return the change it makes.

        `GroupCreate` is checked by `check_create`, since no roster exists before it.

        Raises:
            Forbidden, Conflict, NotFound, Limit: as in the module's table.
        """
        role = self.roles.get(actor)
        match cmd:
            case GroupAdd(users=users):
                if role not in _MANAGERS:
                    raise Forbidden("only the owner or an admin may add members")
                present = [u for u in users if u in self.roles]
                if present:
                    raise Conflict(f"already a member: {present[0]}")
                self._check_room(len(users), max_members)
                return SysChange(type="add", users=users)
            case GroupRemove(users=users):
                if role not in _MANAGERS:
                    raise Forbidden("only the owner or an admin may remove members")
                for u in users:
                    target = self.roles.get(u)
                    if target is None:
                        raise NotFound(f"not a member: {u}")
                    if target == OWNER or (target == ADMIN and role != OWNER):
                        raise Forbidden(f"{u} cannot be removed by {actor}")
                return SysChange(type="remove", users=users)
            case GroupJoin():
                if not self.public:
                    raise Forbidden("the group is not public")
                if role is not None:
                    raise Conflict("already a member")
                self._check_room(1, max_members)
                return SysChange(type="join", users=(actor,))
            case GroupLeave():
                if role is None:
                    raise Forbidden("not a member")
                if role == OWNER and len(self.roles) > 1:
                    raise Forbidden("the owner cannot leave while others remain")
                return SysChange(type="leave", users=(actor,))
            case GroupRole(user=user, role=new_role):
                if role != OWNER:
                    raise Forbidden("only the owner may change roles")
                target = self.roles.get(user)
                if target is None:
                    raise NotFound(f"not a member: {user}")
                if target == OWNER:
                    raise Forbidden("the owner's role cannot change")
                return SysChange(type="role", users=(user,), role=new_role)
            case _:  # pragma: no cover - GroupCreate goes to check_create
                raise TypeError(cmd)

    def _check_room(self, extra: int, max_members: int) -> None:
        if len(self.roles) + extra > max_members:
            raise Limit(f"a group holds at most {max_members} members")

    def fold(self, change: SysChange, actor: str) -> None:
        """Apply one membership change made by `actor` (already checked)."""
        kind = change.type
        if kind == "create":
            self.owner, self.title, self.public = actor, change.title, bool(change.public)
            self.roles = dict.fromkeys(change.users, MEMBER)
            self.roles[actor] = OWNER
        elif kind in ("add", "join"):
            self.roles.update(dict.fromkeys(change.users, MEMBER))
        elif kind in ("remove", "leave"):
            for u in change.users:
                self.roles.pop(u, None)
            if self.owner not in self.roles:
                self.owner = None
        elif kind == "role":
            self.roles[change.users[0]] = change.role or MEMBER


def check_create(actor: str, cmd: GroupCreate, max_members: int) -> SysChange:
    """Validate a `group.create` (the group must not exist; the caller checks that).

    Returns:
        The `create` change, whose users list every initial member, the creator first.

    Raises:
        Limit: more initial members than `max_members`.
    """
    users = tuple(dict.fromkeys((actor, *cmd.members)))
    if len(users) > max_members:
        raise Limit(f"a group holds at most {max_members} members")
    return SysChange(type="create", users=users, title=cmd.title, public=cmd.public)


def joined(change: SysChange) -> tuple[str, ...]:
    """Users who become members by `change`: they receive it and all later events."""
    return change.users if change.type in ("create", "add", "join") else ()


def left(change: SysChange) -> tuple[str, ...]:
    """Users who stop being members by `change`: they receive it, then nothing more."""
    return change.users if change.type in ("remove", "leave") else ()


def members_at(changes: Iterable[tuple[SysChange, str]]) -> set[str]:
    """Members after folding `(change, actor)` pairs from the start of a log."""
    roster = Roster()
    for change, actor in changes:
        roster.fold(change, actor)
    return set(roster.roles)


def recipients(members_after: set[str], change: SysChange | None) -> set[str]:
    """spec §5: the recipients of event N are the members after it plus those it removed."""
    return members_after | set(left(change)) if change else set(members_after)

"""Typed reads shared by several reconcilers: accounts and projects (docs/xnat-api.md §8, §9).

Every function here only sends ``GET`` requests. Reconcilers read their area's current state
through these (or their own small reader) once, then plan with a pure function.

- Accounts: XNAT answers ``GET /xapi/users/{u}`` with **500**, not 404, for a user that does not
  exist (docs/xnat-api.md §8), so existence is decided from the login listing
  ``GET /xapi/users`` (every account, enabled or not) and only listed accounts are read.
- Projects: ``GET /data/projects?format=json`` lists them (``ResultSet.Result[]``), and
  ``GET /data/projects/{id}/users?format=json`` lists the enabled members with their group ids
  ``{id}_owner|_member|_collaborator`` (§9).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from xnat_fleet.xnat.client import XnatClient, XnatError, seg

# Membership groups as the REST path names them, and the group-id suffix XNAT lists (§9).
GROUPS = {"Owners": "_owner", "Members": "_member", "Collaborators": "_collaborator"}


def true(value: Any) -> bool:
    """XNAT's booleans arrive as JSON booleans or as the strings ``"true"``/``"false"``."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


@dataclass(frozen=True)
class Account:
    """One XNAT account as ``GET /xapi/users/{u}`` and its roles/groups report it (§8)."""

    username: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    enabled: bool = True
    verified: bool = True
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # site groups and project groups ({project}_owner, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
            "enabled": self.enabled,
            "verified": self.verified,
            "roles": list(self.roles),
            "groups": list(self.groups),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Account:
        return cls(
            username=str(data["username"]),
            first_name=data.get("firstName"),
            last_name=data.get("lastName"),
            email=data.get("email"),
            enabled=true(data.get("enabled", True)),
            verified=true(data.get("verified", True)),
            roles=tuple(sorted(str(r) for r in data.get("roles", ()))),
            groups=tuple(sorted(str(g) for g in data.get("groups", ()))),
        )


def logins(client: XnatClient) -> frozenset[str]:
    """``GET /xapi/users``: every login, enabled or disabled (§8)."""
    data = client.get_json("/xapi/users")
    if not isinstance(data, list):
        raise XnatError(f"GET /xapi/users on {client.url}: expected a list of logins")
    return frozenset(str(u) for u in data)


def account(
    client: XnatClient, username: str, known: Collection[str] | None = None
) -> Account | None:
    """The account with its roles and groups, or None when XNAT has no such login.

    ``known`` is the login listing when the caller already has it (one listing per plan)."""
    if known is None:
        known = logins(client)
    if username not in known:
        return None
    u = seg(username)
    data = client.get_json(f"/xapi/users/{u}")  # §8: 200 for a listed login
    if not isinstance(data, dict):
        raise XnatError(f"GET /xapi/users/{u} on {client.url}: expected a JSON object")
    roles = client.get_json(f"/xapi/users/{u}/roles") or []  # §8: Collection<String>
    groups = client.get_json(f"/xapi/users/{u}/groups") or []  # §8: Set<String> of group ids
    return Account(
        username=username,
        first_name=data.get("firstName"),
        last_name=data.get("lastName"),
        email=data.get("email"),
        enabled=true(data.get("enabled", True)),
        verified=true(data.get("verified", True)),
        roles=tuple(sorted(str(r) for r in roles)),
        groups=tuple(sorted(str(g) for g in groups)),
    )


def result_rows(data: Any, path: str) -> list[Any]:
    """The ``ResultSet.Result`` list of an XNAT 1.x ``/data`` listing (§9)."""
    try:
        rows = data["ResultSet"]["Result"]
    except (KeyError, TypeError):
        raise XnatError(f"GET {path}: the answer has no ResultSet.Result list") from None
    if not isinstance(rows, list):
        raise XnatError(f"GET {path}: ResultSet.Result is not a list")
    return rows


def list_projects(client: XnatClient) -> dict[str, dict[str, Any]]:
    """``GET /data/projects?format=json`` → rows keyed by ``ID`` (§9)."""
    data = client.get_json("/data/projects", params={"format": "json"})
    rows = result_rows(data, "/data/projects")
    return {str(row["ID"]): row for row in rows if isinstance(row, dict) and row.get("ID")}


def group_of(pid: str, row: dict[str, Any]) -> str | None:
    """Owners/Members/Collaborators from a users row: group id ``{pid}_owner`` etc. (§9)."""
    group_id = str(row.get("GROUP_ID") or "")
    for group, suffix in GROUPS.items():
        if group_id == pid + suffix:
            return group
    if group_id:
        return group_id  # a custom project group: reported as is, never managed
    display = row.get("displayname")  # no group id at all: fall back to the display name
    return str(display) if display in GROUPS else None


def project_members(client: XnatClient, pid: str) -> dict[str, list[str]]:
    """``GET /data/projects/{id}/users?format=json``: login -> groups (Owners, ...) (§9).
    XNAT lists enabled accounts only."""
    path = f"/data/projects/{seg(pid)}/users"
    data = client.get_json(path, params={"format": "json"})
    members: dict[str, list[str]] = {}
    for row in result_rows(data, path):
        if not isinstance(row, dict) or not row.get("login"):
            continue
        group = group_of(pid, row)
        if group is not None:
            members.setdefault(str(row["login"]), []).append(group)
    return members

"""XNAT accounts of ``fleet_xnat_users``: profile, enabled flag, site roles and groups
(docs/xnat-api.md §8).

- Local accounts are created (``POST /xapi/users``, 201 created / 409 exists) with their password
  from the vault. Passwords are set at creation only and never updated afterwards: users change
  their own passwords, and the toolkit must not reset them on every run. A password is never
  displayed (``SECRET``).
- LDAP and OpenID accounts are created by XNAT at the person's first login; until then the plan
  carries a ``note``. Once present, their roles, groups and enabled flag are reconciled (their
  names and e-mail come from the identity provider).
- Roles and groups the inventory does not list are removed only with ``ctx.prune``; otherwise
  they are shown as a ``note``. Project groups (``{project}_owner|member|collaborator``, §9) are
  the projects reconciler's business and are ignored here.
- ``admin``, ``guest``, the service account and the per-relay Xsync accounts are managed by the
  bootstrap and Xsync reconcilers: an inventory entry for one of them is ignored with a note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from xnat_fleet.model.fleet import XnatUser
from xnat_fleet.xnat import reads
from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.client import OK_STATUSES, XnatClient, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reads import Account

AREA = "users"
PROJECT_GROUP = re.compile(r"^.+_(owner|member|collaborator)$")  # docs/xnat-api.md §9
# docs/xnat-api.md §8 user JSON field -> XnatUser attribute (local accounts only)
PROFILE = (("firstName", "first_name"), ("lastName", "last_name"), ("email", "email"))
# docs/xnat-api.md §8: PUT /xapi/users/{u} answers 304 when no attribute changed.
PUT_USER_OK = (*OK_STATUSES, 304)


def _reserved(ctx: HostContext) -> set[str]:
    d = ctx.desired
    return {"admin", "guest", d.service_user, *d.central_accounts}


def validate(ctx: HostContext) -> tuple[list[XnatUser], list[Change]]:
    """The users this reconciler manages, and notes for the ignored ones (before any request)."""
    d = ctx.desired

    def fail(message: str) -> None:
        raise ReconcileError(ctx.host, AREA, message)

    seen: set[str] = set()
    managed: list[XnatUser] = []
    notes: list[Change] = []
    reserved = _reserved(ctx)
    for user in d.users:
        name = user.username
        if name in seen:
            fail(f"user {name} is listed twice in fleet_xnat_users")
        seen.add(name)
        if name in reserved:
            notes.append(
                Change(
                    AREA,
                    "note",
                    f"user {name}",
                    detail=f"{name} is managed by bootstrap/Xsync; its fleet_xnat_users entry "
                    "is ignored",
                )
            )
            continue
        if user.auth == "local" and not d.user_passwords.get(name):
            fail(f"local user {name} has no password in vault_xnat_user_passwords")
        for attr in ("first_name", "last_name", "email"):
            if not str(getattr(user, attr) or "").strip():
                fail(f"user {name}: {attr} is empty (docs/xnat-api.md §18: no empty values)")
        for group in user.groups:
            if PROJECT_GROUP.match(group):
                fail(
                    f"user {name}: group {group} is a project group; list project membership "
                    "under fleet_projects"
                )
        if len(set(user.roles)) != len(user.roles) or len(set(user.groups)) != len(user.groups):
            fail(f"user {name}: a role or group is listed twice")
        managed.append(user)
    return managed, notes


def read(ctx: HostContext) -> dict[str, Account | None]:
    """Each managed account as XNAT holds it (None: no such login), one listing first
    (docs/xnat-api.md §8: ``GET /xapi/users/{u}`` is a 500 for an unknown user)."""
    users, _notes = validate(ctx)
    if ctx.fresh or not users:
        return {u.username: None for u in users}
    known = reads.logins(ctx.client)
    return {u.username: reads.account(ctx.client, u.username, known) for u in users}


def plan(ctx: HostContext) -> list[Change]:
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, current: Mapping[str, Account | None]) -> list[Change]:
    """Pure: the changes from the inventory's users and ``current`` (no request is sent)."""
    users, changes = validate(ctx)
    for user in users:
        account = current.get(user.username)
        if account is None:
            if user.auth == "local":
                changes.append(_create(ctx, user))
            else:
                changes.append(
                    Change(
                        AREA,
                        "note",
                        f"user {user.username}",
                        detail=f"user {user.username} ({user.auth}) has not logged in yet",
                    )
                )
            continue
        changes.extend(_update(ctx, user, _state(account)))
    return changes


def _state(account: Account) -> dict[str, Any]:
    return {
        "firstName": account.first_name,
        "lastName": account.last_name,
        "email": account.email,
        "enabled": account.enabled,
        "roles": sorted(account.roles),
        "groups": sorted(g for g in account.groups if not PROJECT_GROUP.match(g)),
    }


def _grant(client: XnatClient, username: str, roles: list[str], groups: list[str]) -> None:
    u = seg(username)
    for role in roles:  # docs/xnat-api.md §8: PUT /xapi/users/{u}/roles/{role}
        client.request("PUT", f"/xapi/users/{u}/roles/{seg(role)}")
    for group in groups:  # docs/xnat-api.md §8: PUT /xapi/users/{u}/groups/{group}
        client.request("PUT", f"/xapi/users/{u}/groups/{seg(group)}")


def _revoke(client: XnatClient, username: str, roles: list[str], groups: list[str]) -> None:
    u = seg(username)
    for role in roles:  # docs/xnat-api.md §8 (DELETE of the role resource)
        client.request("DELETE", f"/xapi/users/{u}/roles/{seg(role)}")
    for group in groups:  # docs/xnat-api.md §8 (DELETE of the group resource)
        client.request("DELETE", f"/xapi/users/{u}/groups/{seg(group)}")


def _profile(user: XnatUser) -> dict[str, Any]:
    return {key: getattr(user, attr) for key, attr in PROFILE}


def _create(ctx: HostContext, user: XnatUser) -> Change:
    client = ctx.client
    password = ctx.desired.user_passwords[user.username]
    client.add_secret(password)
    payload = {
        "username": user.username,
        "password": password,
        **_profile(user),
        "enabled": user.enabled,
        "verified": True,
    }
    roles, groups = sorted(user.roles), sorted(user.groups)

    def apply() -> None:
        # docs/xnat-api.md §8 / §6 step 5: POST /xapi/users -> 201 created, 409 exists
        response = client.request("POST", "/xapi/users", json=payload, ok=(200, 201, 409))
        if response.status_code == 409:
            # Created meanwhile: bring the profile in line, never the password (users own it).
            client.request(
                "PUT",
                f"/xapi/users/{seg(user.username)}",
                json={**_profile(user), "enabled": user.enabled},
                ok=PUT_USER_OK,
            )
        _grant(client, user.username, roles, groups)

    shown = {**payload, "password": SECRET, "roles": roles, "groups": groups}
    return Change(AREA, "create", f"user {user.username}", after=shown, apply=apply)


def _update(ctx: HostContext, user: XnatUser, current: dict[str, Any]) -> list[Change]:
    fields: dict[str, Any] = {}
    if user.auth == "local":
        fields = {k: v for k, v in _profile(user).items() if current.get(k) != v}
    if current["enabled"] != user.enabled:
        fields["enabled"] = user.enabled

    add_roles = sorted(set(user.roles) - set(current["roles"]))
    add_groups = sorted(set(user.groups) - set(current["groups"]))
    extra_roles = sorted(set(current["roles"]) - set(user.roles))
    extra_groups = sorted(set(current["groups"]) - set(user.groups))
    del_roles = extra_roles if ctx.prune else []
    del_groups = extra_groups if ctx.prune else []

    changes: list[Change] = []
    if fields or add_roles or add_groups or del_roles or del_groups:
        before = {k: current.get(k) for k in fields}
        after = dict(fields)
        if add_roles or del_roles:
            before["roles"] = current["roles"]
            after["roles"] = sorted((set(current["roles"]) | set(add_roles)) - set(del_roles))
        if add_groups or del_groups:
            before["groups"] = current["groups"]
            after["groups"] = sorted((set(current["groups"]) | set(add_groups)) - set(del_groups))
        client = ctx.client
        username = user.username

        def apply() -> None:
            if fields:
                # docs/xnat-api.md §8: PUT /xapi/users/{u} (merge of the fields sent)
                client.request("PUT", f"/xapi/users/{seg(username)}", json=fields, ok=PUT_USER_OK)
            _grant(client, username, add_roles, add_groups)
            _revoke(client, username, del_roles, del_groups)

        changes.append(
            Change(AREA, "update", f"user {username}", before=before, after=after, apply=apply)
        )
    if not ctx.prune and (extra_roles or extra_groups):
        kept: dict[str, Any] = {}
        if extra_roles:
            kept["roles"] = extra_roles
        if extra_groups:
            kept["groups"] = extra_groups
        changes.append(
            Change(
                AREA,
                "note",
                f"user {user.username} roles/groups not in the inventory",
                before=kept,
                detail="kept; they are removed with --prune",
            )
        )
    return changes

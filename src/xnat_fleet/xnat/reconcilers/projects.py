"""Projects: existence, name/description, accessibility, prearchive code, membership.

docs/xnat-api.md §9. Only the projects the inventory lists are managed; other projects (made by
people or other tools) are ignored, and no project is ever deleted, not even with ``--prune``.

- Create: ``POST /data/projects`` with an XML ``xnat:projectData`` body (JSON is rejected, §9).
  XNAT makes the creating account (the service account) an Owner.
- Name/description: create-or-update ``PUT /data/projects/{id}`` with the same XML body (§9).
- Accessibility: ``GET|PUT /data/projects/{id}/accessibility[/{value}]`` (§9).
- Prearchive code: ``GET|PUT /data/projects/{id}/prearchive_code[/{code}]``; XNAT accepts any
  integer, so 0/4/5 is checked here before any request (§9, §18).
- Membership: ``GET /data/projects/{id}/users?format=json`` (group ids ``{id}_owner`` /
  ``_member`` / ``_collaborator``), ``PUT|DELETE /data/projects/{id}/users/{Group}/{user}`` (§9).
  A member the inventory does not list is removed only with ``ctx.prune`` (else a note); the
  service account and the per-relay Xsync accounts (``desired.central_accounts``, made Owners by
  the xsync reconciler) are never removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from xnat_fleet.xnat import reads
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import ProjectSpec

AREA = "projects"
XNAT_NS = "http://nrg.wustl.edu/xnat"
# docs/xnat-api.md §9: prearchive, auto-archive, auto-archive overwrite
PREARCHIVE_CODES = (0, 4, 5)
ACCESSIBILITY = ("private", "protected", "public")
GROUPS = reads.GROUPS
# Characters XML 1.0 cannot carry at all (not even escaped).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class _Current:
    """What XNAT holds for one existing project."""

    name: str
    secondary_id: str
    description: str
    accessibility: str
    prearchive_code: int | None
    members: dict[str, list[str]] = field(default_factory=dict)  # login -> groups (Owners, ...)


# -- validation ------------------------------------------------------------------------------------
def _validate(ctx: HostContext) -> None:
    """Refuse desired state XNAT would accept but should not get (before any request)."""

    def fail(message: str) -> ReconcileError:
        return ReconcileError(ctx.host, AREA, message)

    seen: set[str] = set()
    for spec in ctx.desired.projects:
        p = spec.project
        if p.id in seen:
            raise fail(f"project {p.id} is listed twice")
        seen.add(p.id)
        # docs/xnat-api.md §9: the server takes any integer; only 0, 4 and 5 mean something.
        if p.prearchive_code not in PREARCHIVE_CODES:
            raise fail(
                f"project {p.id}: prearchive_code {p.prearchive_code!r} is not one of 0 "
                "(prearchive), 4 (auto-archive) or 5 (auto-archive, overwrite)"
            )
        if p.accessibility not in ACCESSIBILITY:
            raise fail(
                f"project {p.id}: accessibility {p.accessibility!r} is not one of "
                f"{', '.join(ACCESSIBILITY)}"
            )
        for what, value in (("name", p.name), ("description", p.description)):
            if _XML_INVALID.search(value):
                raise fail(f"project {p.id}: {what} contains control characters XML cannot carry")
        if not p.name.strip():
            raise fail(f"project {p.id}: name must not be blank")
        roles: dict[str, str] = {}
        for group, users in _desired_groups(spec).items():
            for user in users:
                if user in roles:
                    other = roles[user]
                    where = f"{other} and {group}" if other != group else f"{group} twice"
                    raise fail(f"project {p.id}: user {user} is listed in {where}")
                roles[user] = group


def _desired_groups(spec: ProjectSpec) -> dict[str, list[str]]:
    p = spec.project
    return {"Owners": p.owners, "Members": p.members, "Collaborators": p.collaborators}


# -- XNAT reads ------------------------------------------------------------------------------------


def _read_project(client: XnatClient, pid: str, row: dict[str, Any]) -> _Current:
    base = f"/data/projects/{seg(pid)}"
    # docs/xnat-api.md §9: accessibility and prearchive code read as text/plain.
    access = (client.get_text(f"{base}/accessibility") or "").strip().lower()
    code_text = (client.get_text(f"{base}/prearchive_code") or "").strip()
    try:
        code: int | None = int(code_text)
    except ValueError:
        code = None  # unreadable: planned as a change, so it is set
    return _Current(
        name=str(row.get("name") or "").strip(),
        secondary_id=str(row.get("secondary_ID") or "").strip(),
        description=str(row.get("description") or "").strip(),
        accessibility=access,
        prearchive_code=code,
        members=reads.project_members(client, pid),
    )


@dataclass
class Current:
    """The inventory's projects as XNAT holds them (None: missing) and XNAT's logins (which
    LDAP/OpenID members exist yet)."""

    projects: dict[str, _Current | None]
    logins: frozenset[str] = frozenset()


def read(ctx: HostContext) -> Current:
    _validate(ctx)
    if not ctx.desired.projects or ctx.fresh:
        return Current({s.project.id: None for s in ctx.desired.projects})
    client = ctx.client
    existing = reads.list_projects(client)
    projects: dict[str, _Current | None] = {}
    for spec in ctx.desired.projects:
        row = existing.get(spec.project.id)
        projects[spec.project.id] = None if row is None else _read_project(client, row["ID"], row)
    external = any(u.auth != "local" for u in ctx.desired.users)
    return Current(projects, reads.logins(client) if external else frozenset())


# -- XNAT writes -----------------------------------------------------------------------------------
def project_xml(pid: str, name: str, description: str) -> str:
    """The ``xnat:projectData`` document XNAT creates/updates projects from (§9), escaped."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<xnat:projectData xmlns:xnat={quoteattr(XNAT_NS)} ID={quoteattr(pid)} "
        f"secondary_ID={quoteattr(pid)}>\n"
        f"  <xnat:name>{escape(name)}</xnat:name>\n"
        f"  <xnat:description>{escape(description)}</xnat:description>\n"
        "</xnat:projectData>\n"
    )


def _set_accessibility(client: XnatClient, pid: str, value: str) -> None:
    # docs/xnat-api.md §9: PUT /data/projects/{id}/accessibility/{public|protected|private}
    client.request("PUT", f"/data/projects/{seg(pid)}/accessibility/{seg(value)}")


def _set_prearchive_code(client: XnatClient, pid: str, code: int) -> None:
    # docs/xnat-api.md §9: PUT /data/projects/{id}/prearchive_code/{code} (validated 0/4/5 above)
    client.request("PUT", f"/data/projects/{seg(pid)}/prearchive_code/{code}")


def _create(client: XnatClient, spec: ProjectSpec) -> Callable[[], None]:
    p = spec.project

    def apply() -> None:
        # docs/xnat-api.md §9: POST /data/projects with XML; 200 created (409 exists is an error:
        # the project was not in the listing when this plan was made). Without ?accessibility=
        # XNAT creates it "protected" until the PUT below: pass the inventory's value at once.
        client.request(
            "POST",
            "/data/projects",
            params={"accessibility": p.accessibility},
            text=project_xml(p.id, p.name, p.description),
            content_type="text/xml",
            ok=(200, 201),
        )
        _set_accessibility(client, p.id, p.accessibility)
        _set_prearchive_code(client, p.id, p.prearchive_code)

    return apply


def _update(client: XnatClient, spec: ProjectSpec, changed: dict[str, Any]) -> Callable[[], None]:
    p = spec.project

    def apply() -> None:
        if {"name", "description", "secondary_ID"} & changed.keys():
            # docs/xnat-api.md §9: create-or-update PUT /data/projects/{id} with the XML body.
            client.request(
                "PUT",
                f"/data/projects/{seg(p.id)}",
                text=project_xml(p.id, p.name, p.description),
                content_type="text/xml",
                ok=(200, 201),
            )
        if "accessibility" in changed:
            _set_accessibility(client, p.id, p.accessibility)
        if "prearchive_code" in changed:
            _set_prearchive_code(client, p.id, p.prearchive_code)

    return apply


def _put_member(client: XnatClient, pid: str, group: str, user: str) -> Callable[[], None]:
    def apply() -> None:
        # docs/xnat-api.md §9: PUT /data/projects/{id}/users/{Owners|Members|Collaborators}/{user};
        # a user already in another group of the project is moved.
        client.request("PUT", f"/data/projects/{seg(pid)}/users/{seg(group)}/{seg(user)}")

    return apply


def _delete_member(
    client: XnatClient, pid: str, groups: list[str], user: str
) -> Callable[[], None]:
    def apply() -> None:
        for group in groups:
            # docs/xnat-api.md §9: DELETE /data/projects/{id}/users/{Group}/{user}
            client.request("DELETE", f"/data/projects/{seg(pid)}/users/{seg(group)}/{seg(user)}")

    return apply


# -- planning --------------------------------------------------------------------------------------
def _membership(
    ctx: HostContext, spec: ProjectSpec, current: dict[str, list[str]], logins: frozenset[str]
) -> list[Change]:
    pid = spec.project.id
    client = ctx.client
    changes: list[Change] = []
    wanted: dict[str, str] = {}
    for group, users in _desired_groups(spec).items():
        for user in users:
            wanted[user] = group
    external = {u.username: u.auth for u in ctx.desired.users if u.auth != "local"}
    for user, group in wanted.items():
        have = current.get(user, [])
        if have == [group]:
            continue
        target = f"project {pid} member {user}"
        if not have and user in external and user not in logins:
            # LDAP/OpenID accounts appear at their first login (docs/xnat-api.md §8); until then
            # there is nobody to add. Shown, not drift; the next run adds them.
            changes.append(
                Change(
                    AREA,
                    "note",
                    target,
                    None,
                    {"group": group},
                    detail=f"{user} ({external[user]}) has not logged in yet; added after that",
                )
            )
            continue
        apply = _put_member(client, pid, group, user)
        if not have:
            changes.append(Change(AREA, "create", target, None, {"group": group}, apply=apply))
        else:
            before = {"group": have[0] if len(have) == 1 else have}
            changes.append(Change(AREA, "update", target, before, {"group": group}, apply=apply))
    protected = {ctx.desired.service_user, *ctx.desired.central_accounts}
    for user, have in sorted(current.items()):
        if user in wanted or user in protected:
            continue
        known = [g for g in have if g in GROUPS]
        if not known:
            continue  # a custom project group: not something the inventory describes
        target = f"project {pid} member {user}"
        before = {"group": known[0] if len(known) == 1 else known}
        if ctx.prune:
            changes.append(
                Change(
                    AREA,
                    "delete",
                    target,
                    before,
                    None,
                    apply=_delete_member(client, pid, known, user),
                )
            )
        else:
            changes.append(
                Change(
                    AREA,
                    "note",
                    target,
                    before,
                    None,
                    detail=f"{user} is not in the inventory for project {pid}; kept (use --prune)",
                )
            )
    return changes


def plan(ctx: HostContext) -> list[Change]:
    """Changes that make the inventory's projects exist as described (docs/xnat-api.md §9)."""
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, state: Current) -> list[Change]:
    """Pure: the changes from the inventory's projects and ``state`` (no request is sent)."""
    _validate(ctx)
    client = ctx.client
    changes: list[Change] = []
    for spec in ctx.desired.projects:
        p = spec.project
        current = state.projects.get(p.id)
        if current is None:
            after = {
                "ID": p.id,
                "secondary_ID": p.id,
                "name": p.name,
                "description": p.description,
                "accessibility": p.accessibility,
                "prearchive_code": p.prearchive_code,
            }
            changes.append(
                Change(AREA, "create", f"project {p.id}", None, after, apply=_create(client, spec))
            )
            # XNAT makes the creator (the service account) an Owner; nobody else is a member.
            changes.extend(_membership(ctx, spec, {}, state.logins))
            continue
        have: dict[str, Any] = {
            "name": current.name,
            "secondary_ID": current.secondary_id,
            "description": current.description,
            "accessibility": current.accessibility,
            "prearchive_code": current.prearchive_code,
        }
        want: dict[str, Any] = {
            # XNAT trims surrounding whitespace, so compare without it.
            "name": p.name.strip(),
            "secondary_ID": p.id,
            "description": p.description.strip(),
            "accessibility": p.accessibility,
            "prearchive_code": p.prearchive_code,
        }
        diff = {k: v for k, v in want.items() if have[k] != v}
        if diff:
            changes.append(
                Change(
                    AREA,
                    "update",
                    f"project {p.id}",
                    {k: have[k] for k in diff},
                    diff,
                    apply=_update(client, spec, diff),
                )
            )
        changes.extend(_membership(ctx, spec, current.members, state.logins))
    return changes

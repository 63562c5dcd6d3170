"""Event service: the site switch and the subscriptions that launch container commands
(docs/xnat-api.md §12). Applied after the containers area (§13), whose commands they point at.

- The event service is off on a fresh install and creating a subscription then fails ("Event
  Service disabled.", §12): it is switched on (``PUT /xapi/events/prefs``) first, whenever the
  inventory lists a subscription. It is never switched off here.
- Identity of a subscription = name + project (``event-filter.project-ids``: ``[P]``, or ``[]`` for
  a site-wide one). XNAT accepts duplicates and each one fires (§12), so the inventory is checked
  for duplicates before any request, the list is read before every create, and extra copies of a
  managed subscription already on the server are deleted.
- ``action-key`` is ``org.nrg.containers.services.CommandActionProvider:<wrapper id>``: the id of
  the command *wrapper* (container-service's ``CommandActionProvider`` parses the part after ``:``
  as a wrapper id and launches that wrapper; docs/xnat-api.md §12). The wrapper id is looked up
  by command name + wrapper name among the registered commands; when the containers area is
  about to register a command (fresh site, new or changed command: new ids, see containers.py)
  the plan shows a placeholder and the apply closure resolves the id at apply time.
- A subscription whose fields differ is updated in place (``PUT /xapi/events/subscription/{id}``;
  ``active`` through ``POST .../activate|deactivate``). Subscriptions the inventory does not list
  are deleted only with ``ctx.prune``; otherwise they are shown as notes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from xnat_fleet.model.fleet import EventSubscription
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reconcilers import containers

AREA = "events"
ACTION_PROVIDER = "org.nrg.containers.services.CommandActionProvider"
EVENT_PACKAGE = "org.nrg.xnat.eventservice.events."

Key = tuple[str, str | None]  # (name, project id or None for site-wide)


def key_of(sub: EventSubscription) -> Key:
    return sub.name, sub.project


def stored_key(stored: Mapping[str, Any]) -> Key | None:
    """The identity of a subscription XNAT holds, or None when it matches no inventory shape
    (several projects in one filter)."""
    event_filter = stored.get("event-filter")
    ids = event_filter.get("project-ids") if isinstance(event_filter, dict) else None
    # Site-wide is an empty list; FLIP's payloads use an empty project id for it (§12).
    projects = [p for p in ids or [] if p]
    name = str(stored.get("name", ""))
    if not projects:
        return name, None
    if len(projects) == 1:
        return name, str(projects[0])
    return None


def _describe(key: Key) -> str:
    name, project = key
    return f"subscription {name!r} ({f'project {project}' if project else 'site-wide'})"


def validate(ctx: HostContext) -> None:
    """Everything that can be wrong with the inventory's subscriptions, before any request."""
    desired = ctx.desired
    commands = containers.desired_commands(desired) if desired.container_service else {}
    project_ids = {spec.project.id for spec in desired.projects}
    seen: set[Key] = set()
    for i, sub in enumerate(desired.subscriptions):
        where = f"fleet_event_subscriptions[{i}] ({sub.name})"
        if key_of(sub) in seen:
            raise ReconcileError(
                desired.host,
                AREA,
                f"{where}: a second subscription with the same name and project; XNAT would run "
                "both (docs/xnat-api.md §12)",
            )
        seen.add(key_of(sub))
        command = commands.get(sub.command)
        if command is None:
            raise ReconcileError(
                desired.host,
                AREA,
                f"{where}: command {sub.command!r} is not in fleet_container_service.commands",
            )
        if sub.wrapper not in containers.wrapper_names(command):
            raise ReconcileError(
                desired.host,
                AREA,
                f"{where}: command {sub.command!r} has no wrapper {sub.wrapper!r} "
                f"(it has {', '.join(containers.wrapper_names(command))})",
            )
        if sub.project is not None and sub.project not in project_ids:
            raise ReconcileError(
                desired.host,
                AREA,
                f"{where}: project {sub.project!r} is not a project of this host "
                "(fleet_projects / fleet_sync); the filter would never match",
            )


def payload(sub: EventSubscription, wrapper_id: int | str) -> dict[str, Any]:
    """The subscription as XNAT's event service takes it (docs/xnat-api.md §12)."""
    event_filter: dict[str, Any] = {
        "event-type": EVENT_PACKAGE + sub.event_type,
        "status": sub.status,
        "project-ids": [sub.project] if sub.project else [],  # [] = site-wide (§12)
    }
    if sub.payload_filter:  # no empty values in a payload (§18)
        event_filter["payload-filter"] = sub.payload_filter
    return {
        "name": sub.name,
        "active": sub.active,
        "action-key": f"{ACTION_PROVIDER}:{wrapper_id}",
        "attributes": {},
        "act-as-event-user": sub.act_as_event_user,
        "event-filter": event_filter,
    }


def differences(want: Mapping[str, Any], have: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Field -> (XNAT's value, ours) for every field of ``want`` that XNAT holds differently.
    ``event-filter`` compares key by key; a payload filter we do not set must be absent."""
    diff: dict[str, tuple[Any, Any]] = {}
    for field in ("name", "active", "action-key", "act-as-event-user"):
        if not containers.matches(want[field], have.get(field)):
            diff[field] = (have.get(field), want[field])
    if not containers.matches(want["attributes"], have.get("attributes")):
        diff["attributes"] = (have.get("attributes"), want["attributes"])
    want_filter: Mapping[str, Any] = want["event-filter"]
    have_filter = have.get("event-filter")
    have_filter = have_filter if isinstance(have_filter, dict) else {}
    for field in ("event-type", "status", "project-ids", "payload-filter"):
        ours = want_filter.get(field)
        theirs = have_filter.get(field)
        if field == "payload-filter":
            same = (ours or "") == (theirs or "")
        else:
            same = containers.matches(ours, theirs)
        if not same:
            diff[f"event-filter.{field}"] = (theirs, ours)
    return diff


def parse_created_id(text: str) -> int:
    """``POST /xapi/events/subscription`` answers plain text ``"{name}:{id}"`` (§12): the id is
    after the last ``:`` (a name may itself contain colons)."""
    tail = text.strip().rsplit(":", 1)[-1].strip()
    if not tail.isdigit():
        raise XnatError(f"POST /xapi/events/subscription: cannot read an id from {text[:80]!r}")
    return int(tail)


def _wrapper_id(client: XnatClient, sub: EventSubscription, known: int | None) -> int:
    if known is not None:
        return known
    return containers.resolve_wrapper(client, sub.command, sub.wrapper)[1]


def _set_active(client: XnatClient, sid: int, active: bool) -> None:
    """``POST /xapi/events/subscription/{id}/activate|deactivate`` (§12)."""
    verb = "activate" if active else "deactivate"
    client.request("POST", f"/xapi/events/subscription/{seg(sid)}/{verb}", ok=(200, 201, 204))


def _create(client: XnatClient, sub: EventSubscription, known: int | None) -> Callable[[], None]:
    def apply() -> None:
        """``POST /xapi/events/subscription`` → 201, plain-text ``name:id`` (§12)."""
        body = payload(sub, _wrapper_id(client, sub, known))
        response = client.request("POST", "/xapi/events/subscription", json=body, ok=(200, 201))
        sid = parse_created_id(response.text)
        if not sub.active:  # a new subscription may start active whatever the payload says
            _set_active(client, sid, False)

    return apply


def _create_if_missing(
    client: XnatClient, sub: EventSubscription, known: int | None
) -> Callable[[], None]:
    """Planned while the service was off (XNAT then lists no subscriptions, docs/xnat-api.md
    §12): once the service switch has been applied, create it only if XNAT has none with this
    name and project."""
    create = _create(client, sub, known)

    def apply() -> None:
        if not any(stored_key(s) == key_of(sub) for s in _read_subscriptions(client)):
            create()

    return apply


def _update(
    client: XnatClient,
    sub: EventSubscription,
    sid: int,
    known: int | None,
    fields_differ: bool,
    active_differs: bool,
) -> Callable[[], None]:
    def apply() -> None:
        """``PUT /xapi/events/subscription/{id}`` with the whole subscription (§12), then
        ``activate``/``deactivate`` when only that differs or to make sure it holds."""
        if fields_differ:
            body = payload(sub, _wrapper_id(client, sub, known))
            client.request(
                "PUT", f"/xapi/events/subscription/{seg(sid)}", json=body, ok=(200, 201, 204)
            )
        if active_differs:
            _set_active(client, sid, sub.active)

    return apply


def _delete(client: XnatClient, sid: int) -> Callable[[], None]:
    def apply() -> None:
        """``DELETE /xapi/events/subscription/{id}`` (§12)."""
        client.request("DELETE", f"/xapi/events/subscription/{seg(sid)}", ok=(200, 204))

    return apply


def _enable_service(client: XnatClient) -> Callable[[], None]:
    def apply() -> None:
        """``PUT /xapi/events/prefs`` ``{"enabled": true}`` (§12)."""
        client.request("PUT", "/xapi/events/prefs", json={"enabled": True}, ok=(200, 201, 204))

    return apply


def _sid(stored: Mapping[str, Any]) -> int:
    return int(stored.get("id", 0))


def _read_subscriptions(client: XnatClient) -> list[dict[str, Any]]:
    """``GET /xapi/events/subscriptions`` (plural, docs/xnat-api.md §12). While the event
    service is off XNAT's service returns null and the answer is 200 with an empty body."""
    path = "/xapi/events/subscriptions"
    data = client.get_json(path, allow_empty=True)
    if data is None:
        return []
    if not isinstance(data, list):
        raise XnatError(f"GET {path}: expected a JSON list")
    return sorted((s for s in data if isinstance(s, dict)), key=_sid)


@dataclass
class Current:
    """The event service switch, its subscriptions and the registered commands they name."""

    prefs: Any
    subscriptions: list[dict[str, Any]]
    registered: list[dict[str, Any]] = dc_field(default_factory=list)


def read(ctx: HostContext) -> Current:
    validate(ctx)
    client = ctx.client
    prefs: Any = None
    registered: list[dict[str, Any]] = []
    if ctx.desired.subscriptions:
        # Off on a fresh install (docs/xnat-api.md §12).
        prefs = ctx.read(lambda: client.get_json("/xapi/events/prefs"), fresh={"enabled": False})
        registered = containers.read_commands(ctx)
    none: list[dict[str, Any]] = []
    stored = ctx.read(lambda: _read_subscriptions(client), fresh=none)
    return Current(prefs, stored, registered)


def plan(ctx: HostContext) -> list[Change]:
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, current: Current) -> list[Change]:
    """Pure: the changes from the inventory's subscriptions and ``current`` (no request)."""
    validate(ctx)
    desired = ctx.desired
    client = ctx.client
    subs: Sequence[EventSubscription] = desired.subscriptions
    changes: list[Change] = []
    stored_subs = current.subscriptions
    registered = current.registered
    pending: set[str] = set()
    service_off = False

    if subs:
        # The site switch first: creates fail while it is off (§12).
        prefs = current.prefs
        enabled = isinstance(prefs, dict) and prefs.get("enabled") is True
        service_off = not enabled
        if not enabled:
            changes.append(
                Change(
                    AREA,
                    "update",
                    "event service",
                    before={"enabled": prefs.get("enabled") if isinstance(prefs, dict) else None},
                    after={"enabled": True},
                    apply=_enable_service(client),
                )
            )
        pending = containers.pending_commands(containers.desired_commands(desired), registered)

    by_key: dict[Key, list[dict[str, Any]]] = {}
    for s in stored_subs:
        k = stored_key(s)
        if k is not None:
            by_key.setdefault(k, []).append(s)

    for sub in subs:
        key = key_of(sub)
        known: int | None = None
        if sub.command not in pending:
            found = containers.find_wrapper(registered, sub.command, sub.wrapper)
            known = found[1] if found else None
        shown_id: int | str = known if known is not None else f"(id of {sub.command}/{sub.wrapper})"
        want = payload(sub, shown_id)
        existing = by_key.get(key, [])
        if not existing and service_off:
            changes.append(
                Change(
                    AREA,
                    "create",
                    _describe(key),
                    after=want,
                    detail="the event service is off, so XNAT lists no subscriptions: created "
                    "once it is on, unless one with this name and project exists",
                    apply=_create_if_missing(client, sub, known),
                )
            )
            continue
        if not existing:
            changes.append(
                Change(
                    AREA, "create", _describe(key), after=want, apply=_create(client, sub, known)
                )
            )
            continue
        first, extras = existing[0], existing[1:]
        diff = differences(want, first)
        if known is None:  # the wrapper gets a (new) id in this run: repoint the subscription
            diff["action-key"] = (first.get("action-key"), want["action-key"])
        if diff:
            fields_differ = any(f != "active" for f in diff)
            changes.append(
                Change(
                    AREA,
                    "update",
                    _describe(key),
                    before={f: b for f, (b, _) in diff.items()},
                    after={f: a for f, (_, a) in diff.items()},
                    apply=_update(client, sub, _sid(first), known, fields_differ, "active" in diff),
                )
            )
        for extra in extras:  # duplicates fire too (§12): converge on one
            changes.append(
                Change(
                    AREA,
                    "delete",
                    _describe(key),
                    before={"id": _sid(extra), "action-key": extra.get("action-key")},
                    detail="a duplicate of the subscription kept above; XNAT would run both",
                    apply=_delete(client, _sid(extra)),
                )
            )

    wanted = {key_of(s) for s in subs}
    for s in stored_subs:
        k = stored_key(s)
        if k is not None and k in wanted:
            continue
        target = _describe(k) if k else f"subscription {s.get('name')!r} (id {_sid(s)})"
        before = {"id": _sid(s), "action-key": s.get("action-key")}
        if ctx.prune:
            changes.append(
                Change(AREA, "delete", target, before=before, apply=_delete(client, _sid(s)))
            )
        else:
            changes.append(
                Change(
                    AREA,
                    "note",
                    target,
                    before=before,
                    detail="not in the inventory; kept (use --prune to delete)",
                )
            )
    return changes

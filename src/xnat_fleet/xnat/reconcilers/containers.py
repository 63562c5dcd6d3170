"""Container service: backend, commands and where their wrappers are enabled (docs/xnat-api.md §13).

What this area owns, when ``desired.container_service`` is set:

- the compute backend (``GET|POST /xapi/docker/server``): only the fields the inventory sets are
  compared (name, host, backend, path translation, finalizing concurrency); an empty path
  translation prefix is not set at all (§18 "no empty values in any payload");
- the commands of ``desired.commands`` (command JSON files), identified by their ``name``;
- whether each wrapper of those commands is enabled site-wide (``ContainerService.site_wrappers``)
  and per project (``Project.wrappers``).

Commands XNAT holds that the inventory does not list are left alone (images pulled with
``save-commands``, commands an administrator added): this area never deletes them.

**Changed commands are deleted and registered again** (delete + create), not updated in place.
docs/xnat-api.md §13 documents create (``POST /xapi/commands``), lookup and delete, and says an
update
is a full replace anyway; delete + create uses only those verified calls, works the same on every
container-service version, and leaves exactly the command the file describes (an in-place update
keeps wrappers, inputs and mounts the new JSON no longer has). The cost: the command and its
wrappers get new ids, so their enabled flags start over and event subscriptions pointing at the
old wrapper id must be repointed. This module plans for that: a replaced command's wrappers are
treated as disabled everywhere (their enablement is planned again), every apply closure resolves
command and wrapper ids by name at apply time (:func:`resolve_wrapper`), and
:func:`pending_commands` tells the events area which commands will get new ids.

Wrapper names must be unique across the managed commands (the inventory names wrappers, not
commands); an unknown or ambiguous wrapper name is a :class:`ReconcileError` before any request,
because XNAT "succeeds" with bad ids (§13).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xnat_fleet.model.fleet import ContainerService
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat

AREA = "containers"


@dataclass(frozen=True, order=True)
class WrapperRef:
    """One wrapper of one managed command, by name."""

    command: str
    wrapper: str

    def __str__(self) -> str:
        return f"{self.command}/{self.wrapper}"


# -- desired state ---------------------------------------------------------------------------------
def _fail(desired: DesiredXnat, message: str) -> ReconcileError:
    return ReconcileError(desired.host, AREA, message)


def desired_commands(desired: DesiredXnat) -> dict[str, dict[str, Any]]:
    """The inventory's commands by name, validated (unique names, wrappers with unique names).

    Raises :class:`ReconcileError` (before any request) when a command cannot be registered
    as written."""
    commands: dict[str, dict[str, Any]] = {}
    for i, command in enumerate(desired.commands):
        name = command.get("name")
        where = f"fleet_container_service.commands[{i}]"
        if not isinstance(name, str) or not name:
            raise _fail(desired, f"{where}: the command JSON needs a 'name'")
        if name in commands:
            raise _fail(desired, f"{where}: a second command named {name!r} (names identify them)")
        wrappers = command.get("xnat")
        if not isinstance(wrappers, list) or not wrappers:
            raise _fail(desired, f"{where} ({name}): needs 'xnat', a list of wrappers (§13)")
        seen: set[str] = set()
        for j, wrapper in enumerate(wrappers):
            wname = wrapper.get("name") if isinstance(wrapper, dict) else None
            if not isinstance(wname, str) or not wname:
                raise _fail(desired, f"{where} ({name}): xnat[{j}] needs a 'name'")
            if wname in seen:
                raise _fail(desired, f"{where} ({name}): two wrappers named {wname!r}")
            seen.add(wname)
        commands[name] = command
    return commands


def wrapper_names(command: Mapping[str, Any]) -> list[str]:
    return [str(w["name"]) for w in command.get("xnat") or [] if isinstance(w, dict)]


def _wrapper_index(desired: DesiredXnat) -> dict[str, list[WrapperRef]]:
    index: dict[str, list[WrapperRef]] = {}
    for name, command in desired_commands(desired).items():
        for wname in wrapper_names(command):
            index.setdefault(wname, []).append(WrapperRef(name, wname))
    return index


def _refs(desired: DesiredXnat, names: Sequence[str], where: str) -> list[WrapperRef]:
    index = _wrapper_index(desired)
    refs: list[WrapperRef] = []
    for name in names:
        found = index.get(name, [])
        if not found:
            known = ", ".join(sorted(index)) or "none"
            raise _fail(
                desired,
                f"{where}: wrapper {name!r} is not a wrapper of any command in "
                f"fleet_container_service.commands (known: {known}); XNAT would accept the bad "
                "id and do nothing (docs/xnat-api.md §13)",
            )
        if len(found) > 1:
            owners = ", ".join(r.command for r in found)
            raise _fail(desired, f"{where}: wrapper name {name!r} is ambiguous ({owners})")
        if found[0] not in refs:
            refs.append(found[0])
    return refs


def site_wrappers(desired: DesiredXnat) -> list[WrapperRef]:
    """The wrappers to enable site-wide, validated."""
    cs = desired.container_service
    if cs is None:
        return []
    return _refs(desired, cs.site_wrappers, "fleet_container_service.site_wrappers")


def project_wrappers(desired: DesiredXnat) -> dict[str, list[WrapperRef]]:
    """Project id -> the wrappers to enable in it, validated."""
    result: dict[str, list[WrapperRef]] = {}
    for spec in desired.projects:
        p = spec.project
        if p.wrappers and desired.container_service is None:
            raise _fail(
                desired,
                f"fleet_projects ({p.id}).wrappers: needs fleet_container_service with the "
                "commands that define them",
            )
        result[p.id] = _refs(desired, p.wrappers, f"fleet_projects ({p.id}).wrappers")
    return result


def backend_fields(cs: ContainerService) -> dict[str, Any]:
    """The ``/xapi/docker/server`` fields the inventory sets (docs/xnat-api.md §13)."""
    fields: dict[str, Any] = {
        "name": cs.name,
        "host": cs.host,
        "backend": cs.backend,
        "max-concurrent-finalizing-jobs": cs.max_concurrent_finalizing_jobs,
    }
    # Path translation is mandatory when Docker sees the archive under another path (§13); an
    # empty prefix is not sent (§18: no empty values in any payload).
    if cs.path_translation_xnat_prefix:
        fields["path-translation-xnat-prefix"] = cs.path_translation_xnat_prefix
    if cs.path_translation_docker_prefix:
        fields["path-translation-docker-prefix"] = cs.path_translation_docker_prefix
    if cs.backend == "swarm":
        fields["swarm-mode"] = True
    return fields


# -- reading XNAT ----------------------------------------------------------------------------------
def get_commands(client: XnatClient, name: str | None = None) -> list[dict[str, Any]]:
    """``GET /xapi/commands`` (all) or ``?name=`` (docs/xnat-api.md §13): commands with their ids
    and
    their wrappers' ids."""
    data = client.get_json("/xapi/commands", params={"name": name} if name else None)
    if not isinstance(data, list):
        raise XnatError(f"GET /xapi/commands: expected a JSON list, got {type(data).__name__}")
    return [c for c in data if isinstance(c, dict)]


def read_commands(ctx: HostContext) -> list[dict[str, Any]]:
    """The registered commands (none on a fresh site, read without a request)."""
    return ctx.read(lambda: get_commands(ctx.client), fresh=[])


def find_wrapper(
    commands: Sequence[Mapping[str, Any]], command: str, wrapper: str
) -> tuple[int, int] | None:
    """(command id, wrapper id) of ``command``/``wrapper`` among registered commands, or None."""
    for c in commands:
        if c.get("name") != command:
            continue
        for w in c.get("xnat") or []:
            if isinstance(w, dict) and w.get("name") == wrapper and "id" in w and "id" in c:
                return int(c["id"]), int(w["id"])
    return None


def resolve_wrapper(client: XnatClient, command: str, wrapper: str) -> tuple[int, int]:
    """(command id, wrapper id) looked up at apply time with ``GET /xapi/commands?name=`` (§13):
    ids change when a command is registered again, and XNAT accepts bad ids silently (§13)."""
    found = find_wrapper(get_commands(client, command), command, wrapper)
    if found is None:
        raise XnatError(
            f"container service: wrapper {command}/{wrapper} is not registered on {client.url}"
        )
    return found


def _is_empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def matches(want: Any, have: Any) -> bool:
    """Whether XNAT's ``have`` holds everything ``want`` (our JSON) says.

    Dicts compare on the keys we set (XNAT adds defaults and ids: ``id`` keys are ignored at every
    level); lists compare element by element in order; an empty list/dict/None equals another
    empty value; booleans never equal numbers."""
    if isinstance(want, dict):
        if _is_empty(want) and _is_empty(have):
            return True
        if not isinstance(have, dict):
            return False
        return all(matches(v, have.get(k)) for k, v in want.items() if k != "id")
    if isinstance(want, list):
        if _is_empty(want) and _is_empty(have):
            return True
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(matches(w, h) for w, h in zip(want, have, strict=True))
    if want is None:
        return _is_empty(have)
    if isinstance(want, bool) or isinstance(have, bool):
        return isinstance(want, bool) and isinstance(have, bool) and want == have
    return bool(want == have)


def _strip_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


def pending_commands(
    desired: Mapping[str, Mapping[str, Any]], stored: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Names of the desired commands this area will (re)register, i.e. whose command and wrapper
    ids do not exist yet or will change: missing, differing, or registered more than once."""
    pending: set[str] = set()
    for name, command in desired.items():
        same = [c for c in stored if c.get("name") == name]
        if len(same) != 1 or not matches(command, same[0]):
            pending.add(name)
    return pending


# -- apply closures --------------------------------------------------------------------------------
def _post_backend(client: XnatClient, fields: dict[str, Any]) -> None:
    """``POST /xapi/docker/server`` (§13) replaces the whole backend configuration: send what XNAT
    holds now (read at apply time) with our fields on top, so fields we do not manage keep their
    values."""
    current = client.get_json("/xapi/docker/server", ok=(200, 404))
    body = {**(current if isinstance(current, dict) else {}), **fields}
    client.request("POST", "/xapi/docker/server", json=body, ok=(200, 201))


def _register(client: XnatClient, command: dict[str, Any], old_ids: Sequence[int]) -> None:
    """Delete the old registrations (``DELETE /xapi/commands/{id}``) and ``POST /xapi/commands``
    (§13); the reply body is the bare numeric id of the new command (§13, CS 3.8.1)."""
    for cid in old_ids:
        client.request("DELETE", f"/xapi/commands/{seg(cid)}", ok=(200, 204))
    response = client.request("POST", "/xapi/commands", json=command, ok=(200, 201))
    if not response.text.strip().isdigit():
        raise XnatError(
            f"POST /xapi/commands ({command.get('name')}): expected the new command's id, "
            f"got {response.text.strip()[:80]!r}"
        )


def _set_enabled(
    client: XnatClient, ref: WrapperRef, project: str | None, enabled: bool, command_id: int | None
) -> None:
    """``PUT [/xapi/projects/{p}]/xapi/commands/{id}/wrappers/{wrapper}/enabled`` (§13), or
    ``.../disabled`` (container-service's CommandConfigurationRestApi; not in docs/xnat-api.md yet).
    A command id unknown at plan time (command being registered) is looked up now by name."""
    cid = command_id if command_id is not None else resolve_wrapper(client, *_pair(ref))[0]
    prefix = f"/xapi/projects/{seg(project)}" if project else "/xapi"
    state = "enabled" if enabled else "disabled"
    path = f"{prefix}/commands/{seg(cid)}/wrappers/{seg(ref.wrapper)}/{state}"
    client.request("PUT", path, ok=(200, 201, 204))


def _pair(ref: WrapperRef) -> tuple[str, str]:
    return ref.command, ref.wrapper


def read_enabled(client: XnatClient, project: str | None, command_id: int, wrapper: str) -> bool:
    """``GET /xapi/commands/{id}/wrappers/{wrapper}/enabled`` → JSON boolean (site), and
    ``GET /xapi/projects/{p}/commands/{id}/wrappers/{wrapper}/enabled`` → a ProjectEnabledReport
    object ``{"enabled-for-site", "enabled-for-project", "project"}`` (docs/xnat-api.md §13).
    A project that does not exist yet (the projects area creates it in the same run) answers
    404: nothing is enabled there."""
    prefix = f"/xapi/projects/{seg(project)}" if project else "/xapi"
    path = f"{prefix}/commands/{seg(command_id)}/wrappers/{seg(wrapper)}/enabled"
    value = client.get_json(path, ok=(200, 404))
    if project is not None:
        if value is None:
            return False
        if not isinstance(value, dict) or "enabled-for-project" not in value:
            raise XnatError(f"GET {path}: expected a ProjectEnabledReport, got {value!r}")
        value = value["enabled-for-project"]
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


EnabledKey = tuple[str | None, int, str]  # (project or None for the site, command id, wrapper)


@dataclass
class Current:
    """The backend, the registered commands, and the enabled flags of the managed wrappers
    whose command keeps its ids (a re-registered command starts with none enabled)."""

    backend: dict[str, Any] | None
    commands: list[dict[str, Any]]
    enabled: dict[EnabledKey, bool] = field(default_factory=dict)


def read(ctx: HostContext) -> Current:
    desired = ctx.desired
    projects = project_wrappers(desired)  # validates Project.wrappers even without a backend
    if desired.container_service is None:
        return Current(None, [])
    site_wrappers(desired)  # validated before any request
    client = ctx.client
    backend = ctx.read(lambda: client.get_json("/xapi/docker/server", ok=(200, 404)), fresh=None)
    stored = read_commands(ctx)
    commands = desired_commands(desired)
    pending = pending_commands(commands, stored)
    current = Current(backend if isinstance(backend, dict) else None, stored)
    if ctx.fresh:
        return current
    scopes: list[str | None] = [None, *projects]
    for name, command in commands.items():
        if name in pending:
            continue
        cid = next(int(c["id"]) for c in stored if c.get("name") == name and "id" in c)
        for wrapper in wrapper_names(command):
            for project in scopes:
                current.enabled[(project, cid, wrapper)] = read_enabled(
                    client, project, cid, wrapper
                )
    return current


# -- plan ------------------------------------------------------------------------------------------
def plan(ctx: HostContext) -> list[Change]:
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, current: Current) -> list[Change]:
    """Pure: the changes from the inventory's container service and ``current`` (no request)."""
    desired = ctx.desired
    cs = desired.container_service
    projects = project_wrappers(desired)
    if cs is None:
        return []
    commands = desired_commands(desired)
    site = site_wrappers(desired)
    client = ctx.client
    changes: list[Change] = []

    # Backend (§13).
    want = backend_fields(cs)
    have: dict[str, Any] = current.backend or {}
    diff = {k: v for k, v in want.items() if not matches(v, have.get(k))}
    if diff:
        changes.append(
            Change(
                AREA,
                "update",
                f"docker server {cs.name!r}",
                before={k: have.get(k) for k in diff},
                after=diff,
                apply=lambda: _post_backend(client, want),
            )
        )

    # Commands (§13): identity = name; missing -> create, differing -> delete + create.
    stored = current.commands
    pending = pending_commands(commands, stored)
    ids: dict[str, int] = {}
    for name, command in commands.items():
        same = [c for c in stored if c.get("name") == name]
        old_ids = [int(c["id"]) for c in same if "id" in c]
        if name not in pending:
            ids[name] = old_ids[0]
            continue
        summary = {
            "version": command.get("version"),
            "image": command.get("image"),
            "wrappers": wrapper_names(command),
        }
        apply = _closure_register(client, command, old_ids)
        if not same:
            changes.append(Change(AREA, "create", f"command {name}", after=summary, apply=apply))
            continue
        differing = [k for k in command if k != "id" and not matches(command[k], same[0].get(k))]
        if len(same) > 1:
            detail = f"registered {len(same)} times (ids {old_ids}): replaced by one registration"
        else:
            detail = (
                "replaced (delete + create): new command and wrapper ids, enablement re-applied"
            )
        changes.append(
            Change(
                AREA,
                "update",
                f"command {name}",
                before={k: _strip_ids(same[0].get(k)) for k in differing},
                after={k: command[k] for k in differing},
                detail=detail,
                apply=apply,
            )
        )

    # Wrapper enablement, site-wide and per project (§13).
    managed = [WrapperRef(n, w) for n, c in commands.items() for w in wrapper_names(c)]
    scopes: list[tuple[str | None, list[WrapperRef]]] = [(None, site)]
    scopes += [(pid, refs) for pid, refs in projects.items()]
    for project, wanted in scopes:
        where = f"in project {project}" if project else "(site)"
        for ref in managed:
            on = ref in wanted
            if ref.command in pending:
                enabled = False  # new ids: nothing is enabled for them yet
            else:
                enabled = current.enabled.get((project, ids[ref.command], ref.wrapper), False)
            if on == enabled:
                continue
            target = f"wrapper {ref} {where}"
            if not on and not ctx.prune:
                changes.append(
                    Change(
                        AREA,
                        "note",
                        target,
                        before={"enabled": True},
                        detail="enabled but not listed in the inventory; kept (use --prune to "
                        "disable)",
                    )
                )
                continue
            known = None if ref.command in pending else ids[ref.command]
            changes.append(
                Change(
                    AREA,
                    "update",
                    target,
                    before={"enabled": enabled},
                    after={"enabled": on},
                    apply=_closure_enable(client, ref, project, on, known),
                )
            )
    return changes


def _closure_register(
    client: XnatClient, command: dict[str, Any], old_ids: list[int]
) -> Callable[[], None]:
    def apply() -> None:
        _register(client, command, old_ids)

    return apply


def _closure_enable(
    client: XnatClient, ref: WrapperRef, project: str | None, on: bool, command_id: int | None
) -> Callable[[], None]:
    def apply() -> None:
        _set_enabled(client, ref, project, on, command_id)

    return apply

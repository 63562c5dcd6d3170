"""Anonymization (DicomEdit) scripts and their enable flags, site-wide and per project.

docs/xnat-api.md §11. The site flag is always set explicitly: XNAT's default is *enabled* with a
shipped script that rewrites Study Description, Patient Name and Patient ID of every received file
(§11 "Default behaviour", §18). ``desired.site_anon_script`` None leaves the site script text
alone. Project scripts are managed only for projects whose ``ProjectSpec`` has a script; they need
the project, so this area runs after ``projects`` (a project that does not exist yet is planned as
"no script yet" without a request).

Endpoints (§11): ``GET|PUT /xapi/anonymize/site`` (text/plain),
``GET /xapi/anonymize/site/enabled``, ``PUT /xapi/anonymize/site/enabled?enable=``;
``GET|PUT /xapi/anonymize/projects/{p}`` (GET 204 = no script),
``GET /xapi/anonymize/projects/{p}/enabled``, ``PUT …/enabled?enable=``.
Scripts compare equal modulo a trailing newline; a change's ``detail`` is a unified diff.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xnat_fleet.xnat.changes import Action, Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reads import list_projects

AREA = "anonymization"
SITE = "/xapi/anonymize/site"
# XNAT's defaults on a fresh site (§7 table, §11): the site script is enabled; a project has none.
FRESH_SITE_ENABLED = True
# What a plan shows for a script XNAT does not return: none stored, or stored but disabled.
UNREADABLE = "none, or disabled (XNAT hides a disabled script)"


def _norm(script: str) -> str:
    return script.rstrip("\n")


def same_script(current: str | None, desired: str) -> bool:
    """Equal modulo a trailing newline (XNAT may or may not keep it)."""
    return current is not None and _norm(current) == _norm(desired)


def summary(script: str | None) -> str:
    """A one-line stand-in for a script in a plan's before/after (the diff is in ``detail``)."""
    if script is None:
        return "none"
    text = _norm(script)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    lines = len(text.splitlines())
    return f"{lines} line{'s' if lines != 1 else ''}, sha256 {digest}"


def script_diff(current: str | None, desired: str, label: str) -> str:
    """Unified diff (difflib) of XNAT's script and the inventory's."""
    old = _norm(current).splitlines() if current is not None else []
    new = _norm(desired).splitlines()
    return "\n".join(
        difflib.unified_diff(
            old, new, fromfile=f"{label} (XNAT)", tofile=f"{label} (inventory)", lineterm=""
        )
    )


def _as_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise XnatError(f"GET {path}: expected a JSON boolean, got {value!r}")


# -- validation ------------------------------------------------------------------------------------
def _validate(ctx: HostContext) -> None:
    d = ctx.desired

    def fail(message: str) -> ReconcileError:
        return ReconcileError(ctx.host, AREA, message)

    # docs/xnat-api.md §6: no empty values in a payload (XNAT stores them without complaint).
    if d.site_anon_script is not None and not d.site_anon_script.strip():
        raise fail("the site anonymization script is empty")
    for spec in d.projects:
        if spec.anon_script is not None and not spec.anon_script.strip():
            raise fail(f"project {spec.project.id}: the anonymization script is empty")
        if spec.anon_enabled and spec.anon_script is None:
            raise fail(f"project {spec.project.id}: anonymization enabled without a script")


# -- reads -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anon:
    """A script and its flag as XNAT reports them. XNAT keeps both in one config entry and
    hides a disabled script (docs/xnat-api.md §11): ``script`` is None while ``enabled`` is False,
    or when there is none."""

    script: str | None
    enabled: bool


def _script(client: XnatClient, path: str) -> str | None:
    # §11: 200 with the text; the site answers an empty body and a project 204 when there is no
    # enabled script.
    text = client.get_text(path, ok=(200, 204))
    return text if text else None


def _read_site(client: XnatClient) -> Anon:
    # §11: GET /xapi/anonymize/site (text/plain) and .../site/enabled (JSON bool).
    enabled = _as_bool(client.get_json(f"{SITE}/enabled"), f"{SITE}/enabled")
    return Anon(_script(client, SITE) if enabled else None, enabled)


def _read_project(client: XnatClient, pid: str) -> Anon:
    base = f"/xapi/anonymize/projects/{seg(pid)}"
    enabled = _as_bool(client.get_json(f"{base}/enabled"), f"{base}/enabled")
    return Anon(_script(client, base) if enabled else None, enabled)


@dataclass
class Current:
    site: Anon
    projects: dict[str, Anon] = field(default_factory=dict)  # only projects with a script


def read(ctx: HostContext) -> Current:
    """Site script + flag, and those of each project the inventory gives a script."""
    _validate(ctx)
    client = ctx.client
    # XNAT's defaults on a fresh site: the shipped script, enabled (not read yet).
    site = ctx.read(lambda: _read_site(client), fresh=Anon(None, FRESH_SITE_ENABLED))
    current = Current(site)
    specs = [s for s in ctx.desired.projects if s.anon_script is not None]
    if not specs:
        return current
    no_projects: dict[str, dict[str, Any]] = {}
    existing = ctx.read(lambda: list_projects(client), fresh=no_projects)
    for spec in specs:
        pid = spec.project.id
        # A project the projects area has yet to create has no script yet.
        current.projects[pid] = _read_project(client, pid) if pid in existing else Anon(None, False)
    return current


# -- writes ----------------------------------------------------------------------------------------
def _writer(
    client: XnatClient, base: str, script: str | None, enabled: bool | None
) -> Callable[[], None]:
    """Set the script and/or the flag under ``base`` (site or project, §11).

    The script goes first: writing it re-enables it (always for a project, on newer builds for
    the site), so the flag is written last whenever the inventory's flag must hold afterwards.
    """

    def apply() -> None:
        if script is not None:
            # §11: PUT {base} with the script as text/plain
            client.request("PUT", base, text=script, content_type="text/plain")
        if enabled is not None:
            # §11: PUT {base}/enabled?enable=true|false: the value is the query parameter, yet
            # the mapping consumes application/json (415 without that Content-Type).
            client.request(
                "PUT",
                f"{base}/enabled",
                params={"enable": "true" if enabled else "false"},
                text="",
                content_type="application/json",
            )

    return apply


def _change(
    client: XnatClient,
    base: str,
    target: str,
    label: str,
    current: Anon,
    desired_script: str | None,
    desired_enabled: bool,
    new_action: Action = "create",
) -> Change | None:
    """The change that makes ``current`` hold the inventory's script and flag.

    A disabled script cannot be read back (§11), so it is compared only while enabled: a
    disabled script that should stay disabled is left alone; one that should be enabled is
    written again (and its flag set), which also makes it readable for the read-back.
    """
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    detail = ""
    script = None
    if desired_script is not None:
        readable_and_differs = current.enabled and not same_script(current.script, desired_script)
        if readable_and_differs or (not current.enabled and desired_enabled):
            script = desired_script
    if script is not None:
        shown = current.script if current.enabled else None
        before["script"] = summary(shown) if current.enabled else UNREADABLE
        after["script"] = summary(script)
        detail = script_diff(shown, script, label)
    enabled = None
    if current.enabled != desired_enabled or (script is not None and not desired_enabled):
        enabled = desired_enabled  # after a script write the flag is on again: set it back
    if current.enabled != desired_enabled:
        before["enabled"] = current.enabled
        after["enabled"] = desired_enabled
    if not after:
        return None
    action: Action = new_action if script is not None and current.script is None else "update"
    return Change(
        AREA,
        action,
        target,
        before,
        after,
        detail=detail,
        apply=_writer(client, base, script, enabled),
    )


def plan(ctx: HostContext) -> list[Change]:
    """Site script + flag, then each project's script + flag (docs/xnat-api.md §11)."""
    return plan_changes(ctx, read(ctx))


def plan_changes(ctx: HostContext, current: Current) -> list[Change]:
    """Pure: the changes from the inventory and ``current`` (no request is sent)."""
    _validate(ctx)
    d = ctx.desired
    client = ctx.client
    changes: list[Change] = []
    site_change = _change(
        client,
        SITE,
        "site anonymization",
        "site script",
        current.site,
        d.site_anon_script,
        d.site_anon_enabled,
        # The site always has a script (XNAT ships one), read or not.
        new_action="update",
    )
    if site_change is not None:
        changes.append(site_change)
    for spec in d.projects:
        if spec.anon_script is None:
            continue
        pid = spec.project.id
        change = _change(
            client,
            f"/xapi/anonymize/projects/{seg(pid)}",
            f"project {pid} anonymization",
            f"project {pid} script",
            current.projects.get(pid, Anon(None, False)),
            spec.anon_script,
            spec.anon_enabled,
        )
        if change is not None:
            changes.append(change)
    return changes

"""Anonymization (DicomEdit) scripts and their enable flags, site-wide and per project.

xnat-facts.md §11. The site flag is always set explicitly: XNAT's default is *enabled* with a
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
from typing import Any

from xnat_fleet.xnat.changes import Action, Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.reconcilers.projects import list_projects

AREA = "anonymization"
SITE = "/xapi/anonymize/site"
# XNAT's defaults on a fresh site (§7 table, §11): the site script is enabled; a project has none.
FRESH_SITE_ENABLED = True


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

    # xnat-facts.md §6: no empty values in a payload (XNAT stores them without complaint).
    if d.site_anon_script is not None and not d.site_anon_script.strip():
        raise fail("the site anonymization script is empty")
    for spec in d.projects:
        if spec.anon_script is not None and not spec.anon_script.strip():
            raise fail(f"project {spec.project.id}: the anonymization script is empty")
        if spec.anon_enabled and spec.anon_script is None:
            raise fail(f"project {spec.project.id}: anonymization enabled without a script")


# -- reads -----------------------------------------------------------------------------------------
def _read_site(client: XnatClient) -> tuple[str | None, bool]:
    # xnat-facts.md §11: GET /xapi/anonymize/site (text/plain) and .../site/enabled (JSON bool).
    script = client.get_text(SITE, ok=(200, 204))
    enabled = _as_bool(client.get_json(f"{SITE}/enabled"), f"{SITE}/enabled")
    return script, enabled


def _read_project(client: XnatClient, pid: str) -> tuple[str | None, bool]:
    base = f"/xapi/anonymize/projects/{seg(pid)}"
    # xnat-facts.md §11: GET answers 204 when the project has no script.
    script = client.get_text(base, ok=(200, 204))
    enabled = _as_bool(client.get_json(f"{base}/enabled"), f"{base}/enabled")
    return script, enabled


# -- writes ----------------------------------------------------------------------------------------
def _writer(
    client: XnatClient, base: str, script: str | None, enabled: bool | None
) -> Callable[[], None]:
    """Set the script and/or the flag under ``base`` (site or project, §11).

    When enabling, the new script goes in first; when disabling, the flag goes off first, so XNAT
    never runs a script the inventory does not describe in between.
    """

    def put_script() -> None:
        if script is not None:
            # xnat-facts.md §11: PUT {base} with the script as text/plain
            client.request("PUT", base, text=script, content_type="text/plain")

    def put_flag() -> None:
        if enabled is not None:
            # xnat-facts.md §11: PUT {base}/enabled?enable=true|false (a query parameter)
            client.request(
                "PUT", f"{base}/enabled", params={"enable": "true" if enabled else "false"}
            )

    def apply() -> None:
        if enabled is False:
            put_flag()
            put_script()
        else:
            put_script()
            put_flag()

    return apply


def _change(
    client: XnatClient,
    base: str,
    target: str,
    label: str,
    current: tuple[str | None, bool],
    desired_script: str | None,
    desired_enabled: bool,
    new_action: Action = "create",
) -> Change | None:
    cur_script, cur_enabled = current
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    detail = ""
    script = None
    if desired_script is not None and not same_script(cur_script, desired_script):
        script = desired_script
        before["script"] = summary(cur_script)
        after["script"] = summary(desired_script)
        detail = script_diff(cur_script, desired_script, label)
    enabled = None
    if cur_enabled != desired_enabled:
        enabled = desired_enabled
        before["enabled"] = cur_enabled
        after["enabled"] = desired_enabled
    if not after:
        return None
    action: Action = new_action if "script" in after and cur_script is None else "update"
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
    """Site script + flag, then each project's script + flag (xnat-facts.md §11)."""
    _validate(ctx)
    d = ctx.desired
    client = ctx.client
    changes: list[Change] = []
    fresh_site: tuple[str | None, bool] = (None, FRESH_SITE_ENABLED)
    site = ctx.read(lambda: _read_site(client), fresh=fresh_site)
    site_change = _change(
        client,
        SITE,
        "site anonymization",
        "site script",
        site,
        d.site_anon_script,
        d.site_anon_enabled,
        # On a fresh site the shipped default script is there, just not read yet.
        new_action="update" if ctx.fresh else "create",
    )
    if site_change is not None:
        changes.append(site_change)

    specs = [s for s in d.projects if s.anon_script is not None]
    if not specs:
        return changes
    no_projects: dict[str, dict[str, Any]] = {}
    existing = ctx.read(lambda: list_projects(client), fresh=no_projects)
    for spec in specs:
        pid = spec.project.id
        base = f"/xapi/anonymize/projects/{seg(pid)}"
        # A project the projects area has yet to create has no script yet.
        current = _read_project(client, pid) if pid in existing else (None, False)
        change = _change(
            client,
            base,
            f"project {pid} anonymization",
            f"project {pid} script",
            current,
            spec.anon_script,
            spec.anon_enabled,
        )
        if change is not None:
            changes.append(change)
    return changes

"""Xsync operations on a relay: ``xnat-fleet xsync rekey|status|unblock`` (docs/xnat-api.md §16).

- :func:`rekey` re-issues the alias token of each pairing on the central, saves it on the relay
  and checks it (§16.4, §16.6: a relay switched off for longer than the central's
  ``aliasTokenTimeout`` comes back with a dead credential it cannot refresh itself).
- :func:`status` reports, per pairing, whether the project is configured, whether the stored
  credential works and the last sync status (§16.5).
- :func:`unblock` clears a stuck project block (§16.1, §16.5).

No returned message or raised exception contains an alias secret.
"""

from __future__ import annotations

from typing import Any

from xnat_fleet.xnat.changes import ReconcileError
from xnat_fleet.xnat.client import XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import XsyncPairing
from xnat_fleet.xnat.reconcilers.xsync import (
    AREA,
    XsyncError,
    check_credentials,
    issue_and_save,
    open_session,
    read_config,
)


def _select(ctx: HostContext, projects: list[str] | None) -> list[XsyncPairing]:
    pairings = list(ctx.desired.pairings)
    if not pairings:
        raise ReconcileError(ctx.host, AREA, "no sync links (fleet_sync) on this host")
    if not projects:
        return pairings
    known = {p.link.project: p for p in pairings}
    unknown = [name for name in projects if name not in known]
    if unknown:
        raise ReconcileError(
            ctx.host,
            AREA,
            f"not a synced project here: {', '.join(unknown)} (known: {', '.join(sorted(known))})",
        )
    return [known[name] for name in dict.fromkeys(projects)]


def rekey(ctx: HostContext, projects: list[str] | None = None) -> list[str]:
    """Re-issue, save and check the credentials of every pairing (or of the named relay
    projects); returns one message per project, without secrets. Refuses version mismatches
    like the plan does; raises :class:`XsyncError` when a save or check fails."""
    selected = _select(ctx, projects)
    session = open_session(ctx)
    return [issue_and_save(session, p) for p in selected]


def sync_status(ctx: HostContext, project: str) -> dict[str, Any]:
    """The project's sync state: ``GET /xapi/xsync/syncStatus/projects/{p}`` answers a
    ProjectSyncStatus (docs/xnat-api.md §16.5): ``isSyncing``, ``syncType`` (``NONE_SINCE_STARTUP``
    until the first sync after Tomcat started: the object lives in memory on one node),
    ``syncStartTime``/``syncEndTime`` and ``wasSyncSuccessful``. 404: not configured."""
    path = f"/xapi/xsync/syncStatus/projects/{seg(project)}"
    data = ctx.client.get_json(path, ok=(200, 204, 404), allow_empty=True)
    empty: dict[str, Any] = {
        "syncing": None,
        "last_sync_type": None,
        "last_sync_start": None,
        "last_sync_end": None,
        "last_sync_successful": None,
    }
    if data is None:
        return empty
    if not isinstance(data, dict):
        raise XsyncError(f"{ctx.host}: xsync: GET {path} did not answer a JSON object")
    return {
        "syncing": data.get("isSyncing"),
        "last_sync_type": data.get("syncType"),
        "last_sync_start": data.get("syncStartTime"),
        "last_sync_end": data.get("syncEndTime"),
        "last_sync_successful": data.get("wasSyncSuccessful"),
    }


def status(ctx: HostContext) -> list[dict[str, Any]]:
    """Per pairing: project, central project and URL, configured?, credential check (ok and HTTP
    status), last sync status and time. Reads the relay only (works while the central is down)."""
    selected = _select(ctx, None)
    session = open_session(ctx, need_central=False)
    rows: list[dict[str, Any]] = []
    for p in selected:
        config = read_config(ctx.client, p.link.project)  # §16.3
        check = check_credentials(session, p)  # §16.4 step 3
        state = sync_status(ctx, p.link.project)
        rows.append(
            {
                "project": p.link.project,
                "central_project": p.link.central_project,
                "central_url": p.central_url,
                "configured": config is not None,
                "configured_for_central": config is not None
                and config.get("remote_url") == p.central_url,
                "credentials_ok": check == 200,
                "credentials_check_status": check,
                **state,
            }
        )
    return rows


def unblock(ctx: HostContext, project: str) -> str:
    """``POST /xapi/xsync/unblock/{p}`` (docs/xnat-api.md §16.5); 404 = the project is not
    configured for Xsync here, reported as :class:`XsyncError`."""
    if not project:
        raise ReconcileError(ctx.host, AREA, "unblock needs a project")
    response = ctx.client.request("POST", f"/xapi/xsync/unblock/{seg(project)}", ok=(200, 204, 404))
    if response.status_code == 404:
        raise XsyncError(
            f"{ctx.host}: xsync: project {project} is not configured for Xsync here "
            "(unblock answered HTTP 404, docs/xnat-api.md §16.5); nothing to unblock"
        )
    return f"{ctx.host}: project {project} unblocked"


__all__ = ["XnatError", "XsyncError", "rekey", "status", "unblock"]

"""Site configuration (``/xapi/siteConfig``, docs/xnat-api.md §7).

One ``update`` change listing only the keys of ``desired.site_config`` whose current value
differs, applied with one ``POST /xapi/siteConfig`` of exactly those keys; the engine reads back
by planning again. Values are compared as native JSON types: XNAT may echo booleans and numbers
as strings and lists (``enabledProviders``) as comma-separated strings. No key here is a secret.
``initialized`` belongs to the bootstrap reconciler.
"""

from __future__ import annotations

import json
import re
from typing import Any

from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.context import HostContext

AREA = "site"
SITE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # docs/xnat-host.md §4

# XNAT's built-in defaults (docs/xnat-api.md §7 table; paths from §1/§4; `siteUrl` has none), what a
# fresh site is planned against without a request.
DEFAULTS: dict[str, Any] = {
    "initialized": False,
    "siteId": "XNAT",
    "siteUrl": "",
    "adminEmail": "you@yoursite.org",
    "primaryAdminUsername": "admin",
    "receivedFileUser": "admin",
    "requireLogin": True,
    "userRegistration": False,
    "par": True,
    "emailVerification": True,
    "enableCsrfToken": True,
    "restrictUserListAccessToAdmins": False,
    "uiAllowNonAdminProjectCreation": True,
    "allowNonAdminsToClaimUnassignedSessions": True,
    "projectAllowAutoArchive": True,
    "enableDicomReceiver": True,
    "enableSitewideAnonymizationScript": True,
    "sessionXmlRebuilderInterval": 5,
    "sessionXmlRebuilderRepeat": 60000,
    "sessionTimeout": "15 minutes",
    "aliasTokenTimeout": "2 days",
    "maxFailedLogins": 20,
    "maxFailedLoginsLockoutDuration": "1 hour",
    "passwordComplexity": "^.*$",
    "passwordExpirationInterval": "1 year",
    "inactivityBeforeLockout": "1 year",
    "checksums": True,
    "zipExtensions": "zip,jar,rar,ear,gar,mrb",
    "concurrentMaxSessions": 1000,
    "enabledProviders": ["localdb"],
    "archivePath": "/data/xnat/archive",
    "prearchivePath": "/data/xnat/prearchive",
    "cachePath": "/data/xnat/cache",
    "buildPath": "/data/xnat/build",
    "ftpPath": "/data/xnat/ftp",
    "pipelinePath": "/data/xnat/pipeline",
    "inboxPath": "/data/xnat/inbox",
}

_MISSING = object()


def validate(ctx: HostContext) -> dict[str, Any]:
    """The desired keys, checked before any request (docs/xnat-api.md §18: no empty values,
    ``siteId`` regex, ``siteUrl`` non-empty)."""
    desired = ctx.desired.site_config

    def fail(message: str) -> None:
        raise ReconcileError(ctx.host, AREA, message)

    for key, value in desired.items():
        if not isinstance(key, str) or not key:
            fail(f"site_config key {key!r} is not a preference name")
        if key == "initialized":
            fail("site_config.initialized is set by bootstrap, not by the inventory")
        if value is None or (isinstance(value, str | list | dict) and not value):
            fail(f"site_config.{key} is empty (docs/xnat-api.md §18: no empty values)")
    site_id = desired.get("siteId")
    if site_id is not None and not (isinstance(site_id, str) and SITE_ID.match(site_id)):
        fail(f"siteId {site_id!r} must match {SITE_ID.pattern} (docs/xnat-host.md §4)")
    url = desired.get("siteUrl")
    if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^/\s]+", url)):
        fail(f"siteUrl {url!r} must be an http(s) URL (docs/xnat-api.md §18)")
    return dict(desired)


def _as_list(value: Any) -> list[Any]:
    """``["a","b"]``, ``"a,b"``, ``"[a, b]"`` or ``"['a','b']"`` -> ``["a", "b"]``."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                text = text[1:-1] if text.endswith("]") else text[1:]
            else:
                if isinstance(parsed, list):
                    return parsed
        return [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
    return [value]


def normalise(desired: Any, current: Any) -> Any:
    """``current`` in the native type of ``desired``, where XNAT's echo can be converted."""
    if current is None or current is _MISSING:
        return current
    if isinstance(desired, bool):
        if isinstance(current, str) and current.strip().lower() in ("true", "false"):
            return current.strip().lower() == "true"
        return current
    if isinstance(desired, int | float):
        if isinstance(current, str):
            try:
                number = float(current.strip())
            except ValueError:
                return current
            return int(number) if number.is_integer() else number
        if isinstance(current, float) and current.is_integer():
            return int(current)
        return current
    if isinstance(desired, list | tuple):
        return _as_list(current)
    if (
        isinstance(desired, str)
        and isinstance(current, int | float)
        and not isinstance(current, bool)
    ):
        return str(current)
    return current


def same(desired: Any, current: Any) -> bool:
    value = normalise(desired, current)
    if isinstance(desired, tuple):
        desired = list(desired)
    if isinstance(desired, bool) or isinstance(value, bool):
        return type(value) is type(desired) and value == desired
    return bool(value == desired)


def current_config(ctx: HostContext) -> dict[str, Any]:
    """``GET /xapi/siteConfig`` (docs/xnat-api.md §7), or XNAT's defaults on a fresh site."""

    def read() -> dict[str, Any]:
        data = ctx.client.get_json("/xapi/siteConfig")
        if not isinstance(data, dict):
            raise ReconcileError(ctx.host, AREA, "GET /xapi/siteConfig did not answer a map")
        return data

    fresh = dict(DEFAULTS)
    if ctx.fresh:
        # Bootstrap (applied first) sets these on an uninitialised site (docs/xnat-api.md §6 steps
        # 3 and 6): the site plan does not list them a second time.
        from xnat_fleet.xnat.reconcilers.bootstrap import INIT_KEYS, PATH_KEYS, SWITCH_KEYS

        wanted = ctx.desired.site_config
        fresh.update({k: wanted[k] for k in (*INIT_KEYS, *PATH_KEYS, *SWITCH_KEYS) if k in wanted})
    return ctx.read(read, fresh=fresh)


def plan(ctx: HostContext) -> list[Change]:
    validate(ctx)  # before any request
    return plan_changes(ctx, current_config(ctx))


def plan_changes(ctx: HostContext, current: dict[str, Any]) -> list[Change]:
    """Pure: the siteConfig keys the inventory sets that differ from ``current`` (no request)."""
    desired = validate(ctx)
    diff = {
        key: value for key, value in desired.items() if not same(value, current.get(key, _MISSING))
    }
    if not diff:
        return []
    before = {key: current.get(key) for key in diff}
    client = ctx.client

    def apply() -> None:
        # docs/xnat-api.md §7: POST /xapi/siteConfig with the changed keys only, native JSON types.
        client.request("POST", "/xapi/siteConfig", json=diff)

    return [Change(AREA, "update", "siteConfig", before=before, after=dict(diff), apply=apply)]

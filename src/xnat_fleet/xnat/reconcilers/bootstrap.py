"""First-run bootstrap of one XNAT over REST, fail-closed (xnat-facts.md §6, §18).

:func:`detect` finds out which state the site is in by which credentials work (never by
assumption); :func:`plan` lists only the steps still needed, in XNAT's order:

1. initialise the site (``POST /xapi/siteConfig`` with ``initialized: true``, §6 step 3);
2. rotate the built-in ``admin`` password away from the initial one (§6 step 4);
3. create the service account (Administrator, non_expiring, ALL_DATA_ADMIN; §6 step 5, §8);
4. point ``receivedFileUser`` and ``primaryAdminUsername`` at it (§6 step 6);
5. disable ``admin`` and ``guest``, last (§6 step 7).

Re-running against a bootstrapped site plans nothing. Passwords are shown as ``SECRET`` only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.client import (
    XnatAuthError,
    XnatClient,
    XnatHTTPError,
    XnatSetupPageError,
    seg,
)
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat

AREA = "bootstrap"
ADMIN = "admin"  # XNAT's built-in site admin (xnat-facts.md §1)
GUEST = "guest"  # XNAT's anonymous account (xnat-facts.md §1)
SITE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # xnat-facts.md §4 (UCL's assertion)
INIT_KEYS = ("siteId", "siteUrl", "adminEmail")  # xnat-facts.md §6 step 3
# xnat-facts.md §4 "Self-initialisation" / §1 directories: the paths XNAT wants at initialisation.
PATH_KEYS = (
    "archivePath",
    "prearchivePath",
    "cachePath",
    "buildPath",
    "ftpPath",
    "pipelinePath",
    "inboxPath",
)
SERVICE_ROLES = ("Administrator", "non_expiring")  # xnat-facts.md §6 step 5, §8
CONTAINER_ROLE = "ContainerManager"  # xnat-facts.md §6 step 5 / §8: where CS is installed
SERVICE_GROUPS = ("ALL_DATA_ADMIN",)  # xnat-facts.md §8
SWITCH_KEYS = ("receivedFileUser", "primaryAdminUsername")  # xnat-facts.md §6 step 6
# xnat-facts.md §6 step 1: `admin` can be missing for a short while after Tomcat first answers.
# Bounded: every refused try counts towards XNAT's maxFailedLogins (default 20, §7).
ADMIN_LOGIN_ATTEMPTS = 6
ADMIN_LOGIN_DELAY = 5.0  # seconds between attempts

AdminPassword = Literal["initial", "target", "refused", "disabled"]


@dataclass(frozen=True)
class SiteState:
    """What :func:`detect` found.

    ``service_account``: the service account logs in and is a site admin. ``admin_password``:
    which ``admin`` password works (``refused``: admin is enabled but neither works; ``disabled``:
    admin is disabled). ``missing_roles`` / ``missing_groups``: what a working service admin
    still lacks of the roles and groups bootstrap gives it.
    """

    initialized: bool
    service_account: bool
    admin_password: AdminPassword
    missing_roles: tuple[str, ...] = field(default=())
    missing_groups: tuple[str, ...] = field(default=())


def service_roles(desired: DesiredXnat) -> tuple[str, ...]:
    """Roles of the service account (xnat-facts.md §6 step 5; ContainerManager where the
    container service is configured, §8)."""
    if desired.container_service is not None:
        return (*SERVICE_ROLES, CONTAINER_ROLE)
    return SERVICE_ROLES


def validate(desired: DesiredXnat) -> None:
    """Refuse, before any request, what XNAT would reject or half-apply (xnat-facts.md §18)."""

    def fail(message: str) -> None:
        raise ReconcileError(desired.host, AREA, message)

    site = desired.site_config
    for key in INIT_KEYS:
        value = site.get(key)
        if not isinstance(value, str) or not value.strip():
            # xnat-facts.md §18: siteUrl non-empty (1.10 answers 500 on creates otherwise).
            fail(f"site_config.{key} must be a non-empty string to initialise XNAT")
    if not SITE_ID.match(str(site["siteId"])):
        fail(f"siteId {site['siteId']!r} must match {SITE_ID.pattern} (xnat-facts.md §4)")
    if not re.match(r"^https?://[^/\s]+", str(site["siteUrl"])):
        fail(f"siteUrl {site['siteUrl']!r} must be an http(s) URL")
    for key in PATH_KEYS:
        if key in site and (not isinstance(site[key], str) or not site[key].startswith("/")):
            fail(f"site_config.{key} must be an absolute path")
    if not desired.service_user or desired.service_user in (ADMIN, GUEST):
        fail(f"service account name {desired.service_user!r} must not be admin or guest")
    if not desired.service_password:
        fail("the service account password is empty (vault_xnat_service_password)")
    if not desired.admin_password:
        fail("the admin target password is empty (vault_xnat_admin_password)")
    if desired.admin_password == desired.initial_admin_password:
        fail("the admin target password equals XNAT's initial password; choose another")


# -- detection ---------------------------------------------------------------------------------
def _site_config_probe(client: XnatClient) -> dict[str, Any] | None:
    """``GET /xapi/siteConfig`` as ``client`` (xnat-facts.md §6 step 2): the full map for a site
    admin (before and after initialisation), ``{}`` (pre-init) or 403 for other users, 401 when
    the credentials are refused; some versions answer a refused login with the HTML login page
    (§6 "Fail-closed rules"). Returns the map for an admin, ``{}`` for a non-admin, None when
    refused."""
    try:
        response = client.request("GET", "/xapi/siteConfig", ok=(200, 401, 403), expect="json")
    except XnatSetupPageError:
        return None
    if response.status_code == 401:
        return None
    if response.status_code == 403:
        return {}
    try:
        data = response.json()
    except ValueError:
        raise XnatHTTPError(
            "GET", "/xapi/siteConfig", 200, "the body is not JSON", client.url
        ) from None
    return data if isinstance(data, dict) else {}


def _initialized(client: XnatClient) -> bool:
    """``GET /xapi/siteConfig/initialized`` answers before initialisation (xnat-facts.md §6)."""
    value = client.get_json("/xapi/siteConfig/initialized")
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _auth_error(desired: DesiredXnat, client: XnatClient, why: str) -> XnatAuthError:
    return XnatAuthError(
        "GET",
        "/xapi/siteConfig",
        401,
        f"{desired.host}: {why}; refusing to guess (xnat-facts.md §6, §18)",
        client.url,
    )


def detect(
    desired: DesiredXnat,
    probe: XnatClient,
    *,
    attempts: int = ADMIN_LOGIN_ATTEMPTS,
    delay: float = ADMIN_LOGIN_DELAY,
) -> SiteState:
    """Which credentials work, and whether XNAT is initialised (xnat-facts.md §6 steps 1-2).

    Credentials are probed in order: the service account, ``admin`` with the target password,
    ``admin`` with the initial password, each with Basic auth and no session. When the service
    account is a working site admin, ``admin``'s state is read as that account (no login retry).
    Otherwise the first admin login is retried ``attempts`` times, ``delay`` seconds apart (§6
    step 1). None working: :class:`XnatAuthError` naming the host.
    """
    validate(desired)
    probe.add_secret(*desired.secrets)
    svc = probe.as_user(desired.service_user, desired.service_password, use_session=False)
    target = probe.as_user(ADMIN, desired.admin_password, use_session=False)
    initial = probe.as_user(ADMIN, desired.initial_admin_password, use_session=False)

    svc_config = _site_config_probe(svc)
    svc_admin = bool(svc_config)
    if svc_admin:
        initialized = _initialized(svc)
        if initialized:
            return _detect_with_service(desired, svc, target, initial)
        # Uninitialised yet the service account is an admin: probe admin directly, once.
        admin_state: AdminPassword = "refused"
        if _site_config_probe(target):
            admin_state = "target"
        elif _site_config_probe(initial):
            admin_state = "initial"
        return SiteState(False, True, admin_state)

    for attempt in range(max(1, attempts)):
        for state, client in (("target", target), ("initial", initial)):
            if _site_config_probe(client):
                password: AdminPassword = "target" if state == "target" else "initial"
                return SiteState(_initialized(client), False, password)
        if attempt + 1 < attempts:
            time.sleep(delay)
    if svc_config is not None:
        why = (
            f"the service account {desired.service_user} logs in but is not a site admin, "
            "and admin accepts neither the target nor the initial password (or is disabled)"
        )
    else:
        why = (
            f"none of the credentials works (service account {desired.service_user}, "
            "admin with the target password, admin with the initial password): XNAT "
            "answered 401 or its login page to each"
        )
    raise _auth_error(desired, probe, why)


def _detect_with_service(
    desired: DesiredXnat, svc: XnatClient, target: XnatClient, initial: XnatClient
) -> SiteState:
    user = seg(desired.service_user)
    roles = svc.get_json(f"/xapi/users/{user}/roles") or []  # xnat-facts.md §8
    groups = svc.get_json(f"/xapi/users/{user}/groups") or []  # xnat-facts.md §8
    missing_roles = tuple(r for r in service_roles(desired) if r not in roles)
    missing_groups = tuple(g for g in SERVICE_GROUPS if g not in groups)
    # xnat-facts.md §8: GET /xapi/users/{u} -> 200 / 404
    admin = svc.get_json(f"/xapi/users/{ADMIN}", ok=(200, 404))
    state: AdminPassword
    if isinstance(admin, dict) and not _true(admin.get("enabled", True)):
        state = "disabled"
    elif _site_config_probe(target):
        state = "target"
    elif _site_config_probe(initial):
        state = "initial"
    elif admin is None:
        state = "disabled"  # no admin account at all: nothing to rotate or disable
    else:
        state = "refused"
    return SiteState(True, True, state, missing_roles, missing_groups)


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


# -- planning ----------------------------------------------------------------------------------
class _Credentials:
    """Which account performs each step; updated as the steps of one apply run."""

    def __init__(self, ctx: HostContext, state: SiteState) -> None:
        d = ctx.desired
        self._base = ctx.client
        self._desired = d
        self.service_admin = state.service_account
        self.admin_password: str | None = {
            "initial": d.initial_admin_password,
            "target": d.admin_password,
        }.get(state.admin_password)

    def admin(self) -> XnatClient:
        """A site admin that works now: ``admin`` with its current password, else the service
        account (xnat-facts.md §6 steps 3-5)."""
        if self.admin_password is not None:
            return self._base.as_user(ADMIN, self.admin_password, use_session=False)
        if self.service_admin:
            return self.service()
        raise _auth_error(self._desired, self._base, "no site admin credential works")

    def initial_admin(self) -> XnatClient:
        return self._base.as_user(ADMIN, self._desired.initial_admin_password, use_session=False)

    def service(self) -> XnatClient:
        d = self._desired
        return self._base.as_user(d.service_user, d.service_password, use_session=False)

    def reader(self) -> XnatClient:
        """Who reads the current state during planning (initialised sites only)."""
        return self.service() if self.service_admin else self.admin()


def plan(ctx: HostContext, state: SiteState | None = None) -> list[Change]:
    """The bootstrap steps still needed, in order (xnat-facts.md §6 steps 3-7).

    ``state`` defaults to :func:`detect` with ``ctx.client``. On an uninitialised site nothing
    is read (XNAT's defaults are assumed: guest enabled, received files and primary admin
    ``admin``, §7).
    """
    d = ctx.desired
    validate(d)
    if state is None:
        state = detect(d, ctx.client)
    ctx.client.add_secret(*d.secrets)
    creds = _Credentials(ctx, state)
    changes: list[Change] = []

    if not state.initialized:
        changes.append(_initialise(d, creds))
    if state.admin_password == "initial":  # noqa: S105  # a state name, not a password
        changes.append(_rotate_admin(d, creds))
    if not state.service_account:
        changes.append(_create_service_account(d, creds))
    elif state.missing_roles or state.missing_groups:
        changes.append(_complete_service_account(d, creds, state))

    if state.initialized:
        reader = creds.reader()
        # xnat-facts.md §7: GET /xapi/siteConfig/values/{k1,k2}
        values = reader.get_json("/xapi/siteConfig/values/" + ",".join(SWITCH_KEYS)) or {}
        # xnat-facts.md §8: GET /xapi/users/{u} -> 200 / 404
        guest = reader.get_json(f"/xapi/users/{GUEST}", ok=(200, 404))
        guest_enabled = isinstance(guest, dict) and _true(guest.get("enabled", True))
    else:  # XNAT's defaults (xnat-facts.md §7 table, §1 accounts): nothing to read yet
        values = {key: ADMIN for key in SWITCH_KEYS}
        guest_enabled = True

    current = {key: values.get(key) for key in SWITCH_KEYS}
    if any(v != d.service_user for v in current.values()):
        changes.append(_switch_identity(d, creds, current))
    if state.admin_password != "disabled":  # noqa: S105  # a state name, not a password
        changes.append(_disable_admin(creds))
    if guest_enabled:
        changes.append(_disable_guest(creds))
    return changes


def _initialise(d: DesiredXnat, creds: _Credentials) -> Change:
    keys = (*INIT_KEYS, *PATH_KEYS)
    payload: dict[str, Any] = {k: d.site_config[k] for k in keys if k in d.site_config}
    payload["initialized"] = True

    def apply() -> None:
        client = creds.admin()
        # xnat-facts.md §6 step 3 / §7: XNAT applies the other keys, then `initialized`.
        client.request("POST", "/xapi/siteConfig", json=payload)
        if not _initialized(client):  # read back (§6 "Read back every write")
            raise XnatHTTPError(
                "POST",
                "/xapi/siteConfig",
                200,
                f"{d.host}: XNAT still reports initialized=false after initialisation",
                client.url,
            )

    return Change(AREA, "run", "initialise site", after=payload, apply=apply)


def _rotate_admin(d: DesiredXnat, creds: _Credentials) -> Change:
    def apply() -> None:
        # xnat-facts.md §6 step 4: as admin with the initial password.
        creds.initial_admin().request(
            "PUT", f"/xapi/users/{ADMIN}", json={"password": d.admin_password}
        )
        creds.admin_password = d.admin_password

    return Change(AREA, "update", "user admin password", before=SECRET, after=SECRET, apply=apply)


def _service_account_payload(d: DesiredXnat) -> dict[str, Any]:
    return {
        "username": d.service_user,
        "password": d.service_password,
        "firstName": "xnat-fleet",
        "lastName": "service",
        "email": d.site_config["adminEmail"],
        "enabled": True,
        "verified": True,
    }


def _grant(client: XnatClient, user: str, roles: tuple[str, ...], groups: tuple[str, ...]) -> None:
    for role in roles:  # xnat-facts.md §8: PUT /xapi/users/{u}/roles/{role}
        client.request("PUT", f"/xapi/users/{seg(user)}/roles/{seg(role)}")
    for group in groups:  # xnat-facts.md §8: PUT /xapi/users/{u}/groups/{group}
        client.request("PUT", f"/xapi/users/{seg(user)}/groups/{seg(group)}")


def _create_service_account(d: DesiredXnat, creds: _Credentials) -> Change:
    payload = _service_account_payload(d)
    roles = service_roles(d)

    def apply() -> None:
        client = creds.admin()
        # xnat-facts.md §6 step 5: POST /xapi/users -> 201 created, 409 exists
        response = client.request("POST", "/xapi/users", json=payload, ok=(200, 201, 409))
        if response.status_code == 409:
            # It exists but did not log in as an admin: it is the toolkit's own account, so its
            # password and flags are reset to the inventory's (xnat-facts.md §8, PUT of the user).
            client.request(
                "PUT",
                f"/xapi/users/{seg(d.service_user)}",
                json={"password": d.service_password, "enabled": True, "verified": True},
            )
        _grant(client, d.service_user, roles, SERVICE_GROUPS)
        creds.service_admin = True

    shown = {**payload, "password": SECRET, "roles": list(roles), "groups": list(SERVICE_GROUPS)}
    return Change(AREA, "create", f"service account {d.service_user}", after=shown, apply=apply)


def _complete_service_account(d: DesiredXnat, creds: _Credentials, state: SiteState) -> Change:
    def apply() -> None:
        _grant(creds.service(), d.service_user, state.missing_roles, state.missing_groups)

    after: dict[str, Any] = {}
    if state.missing_roles:
        after["add roles"] = list(state.missing_roles)
    if state.missing_groups:
        after["add groups"] = list(state.missing_groups)
    return Change(AREA, "update", f"service account {d.service_user}", after=after, apply=apply)


def _switch_identity(d: DesiredXnat, creds: _Credentials, current: dict[str, Any]) -> Change:
    after = {key: d.service_user for key in SWITCH_KEYS}

    def apply() -> None:
        # xnat-facts.md §6 step 6 / §7: POST /xapi/siteConfig; receivedFileUser must be an admin
        # (§1), so this runs after the service account has its Administrator role.
        creds.service().request("POST", "/xapi/siteConfig", json=after)

    return Change(
        AREA,
        "update",
        "siteConfig receivedFileUser, primaryAdminUsername",
        before=current,
        after=after,
        apply=apply,
    )


def _disable_admin(creds: _Credentials) -> Change:
    def apply() -> None:
        # xnat-facts.md §6 step 7
        creds.service().request(
            "PUT", f"/xapi/users/{ADMIN}", json={"enabled": False, "verified": False}
        )

    return Change(
        AREA,
        "update",
        "user admin",
        before={"enabled": True},
        after={"enabled": False, "verified": False},
        apply=apply,
    )


def _disable_guest(creds: _Credentials) -> Change:
    def apply() -> None:
        # xnat-facts.md §6 step 7 / §8: PUT /xapi/users/{u}/enabled/{flag}
        creds.service().request("PUT", f"/xapi/users/{GUEST}/enabled/false")

    return Change(
        AREA,
        "update",
        "user guest",
        before={"enabled": True},
        after={"enabled": False},
        apply=apply,
    )

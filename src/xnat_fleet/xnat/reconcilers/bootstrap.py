"""First-run bootstrap of one XNAT over REST, fail-closed (docs/xnat-api.md §6, §18).

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

from xnat_fleet.xnat import reads
from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.client import (
    OK_STATUSES,
    XnatAuthError,
    XnatClient,
    XnatError,
    XnatHTTPError,
    XnatSetupPageError,
    seg,
)
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat

AREA = "bootstrap"
ADMIN = "admin"  # XNAT's built-in site admin (docs/xnat-host.md §1)
GUEST = "guest"  # XNAT's anonymous account (docs/xnat-host.md §1)
SITE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # docs/xnat-host.md §4 (UCL's assertion)
INIT_KEYS = ("siteId", "siteUrl", "adminEmail")  # docs/xnat-api.md §6 step 3
# docs/xnat-host.md §4 "Self-initialisation" / §1 directories: the paths XNAT wants at
# initialisation.
PATH_KEYS = (
    "archivePath",
    "prearchivePath",
    "cachePath",
    "buildPath",
    "ftpPath",
    "pipelinePath",
    "inboxPath",
)
SERVICE_ROLES = ("Administrator", "non_expiring")  # docs/xnat-api.md §6 step 5, §8
CONTAINER_ROLE = "ContainerManager"  # docs/xnat-api.md §6 step 5 / §8: where CS is installed
# docs/xnat-api.md §16.2: the Java-21 Xsync builds (XNAT 1.10+) let only holders of this role
# read or write the site preferences, site admins included.
XSYNC_ROLE = "XsyncAdministrator"
# docs/xnat-api.md §8: PUT /xapi/users/{u} answers 304 when no attribute changed.
PUT_USER_OK = (*OK_STATUSES, 304)
SERVICE_GROUPS = ("ALL_DATA_ADMIN",)  # docs/xnat-api.md §8
SWITCH_KEYS = ("receivedFileUser", "primaryAdminUsername")  # docs/xnat-api.md §6 step 6
# docs/xnat-api.md §6 step 1: `admin` can be missing for a short while after Tomcat first answers.
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
    still lacks of the roles and groups bootstrap gives it. ``version``: the XNAT version the
    server reports (``/xapi/siteConfig/buildInfo``), which decides version-dependent roles.
    """

    initialized: bool
    service_account: bool
    admin_password: AdminPassword
    missing_roles: tuple[str, ...] = field(default=())
    missing_groups: tuple[str, ...] = field(default=())
    version: str | None = field(default=None, compare=False)  # informational


def service_roles(desired: DesiredXnat, version: str | None = None) -> tuple[str, ...]:
    """Roles of the service account (docs/xnat-api.md §6 step 5; ContainerManager where the
    container service is configured, §8; XsyncAdministrator on Xsync relays of 1.10+, §16.2).
    ``version`` is the one the server reports, else the inventory's."""
    roles: tuple[str, ...] = SERVICE_ROLES
    if desired.container_service is not None:
        roles = (*roles, CONTAINER_ROLE)
    if needs_xsync_role(desired, version):
        roles = (*roles, XSYNC_ROLE)
    return roles


def needs_xsync_role(desired: DesiredXnat, version: str | None = None) -> bool:
    """A relay that pairs projects or sets Xsync preferences on XNAT 1.10+ (the Java-21 Xsync
    builds check that role only). ``version``: as the server reports it (else the inventory's)."""
    if desired.kind != "relay" or not (desired.pairings or desired.xsync_prefs):
        return False
    match = re.match(r"^\s*(\d+)\.(\d+)", version or desired.version)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (1, 10)


def _server_version(client: XnatClient) -> str | None:
    """``GET /xapi/siteConfig/buildInfo`` ``version`` (docs/xnat-api.md §7), None if unreadable."""
    try:
        info = client.get_json("/xapi/siteConfig/buildInfo")
    except XnatError:
        return None
    version = info.get("version") if isinstance(info, dict) else None
    return str(version) if version else None


def validate(desired: DesiredXnat) -> None:
    """Refuse, before any request, what XNAT would reject or half-apply (docs/xnat-api.md §18)."""

    def fail(message: str) -> None:
        raise ReconcileError(desired.host, AREA, message)

    site = desired.site_config
    for key in INIT_KEYS:
        value = site.get(key)
        if not isinstance(value, str) or not value.strip():
            # docs/xnat-api.md §18: siteUrl non-empty (1.10 answers 500 on creates otherwise).
            fail(f"site_config.{key} must be a non-empty string to initialise XNAT")
    if not SITE_ID.match(str(site["siteId"])):
        fail(f"siteId {site['siteId']!r} must match {SITE_ID.pattern} (docs/xnat-host.md §4)")
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
Probe = Literal["admin", "user", "refused"]


def _probe(client: XnatClient) -> tuple[Probe, bool]:
    """Who ``client`` is, from the admin-only ``GET /xapi/siteConfig/initialized``
    (docs/xnat-api.md §6, §7), and whether the site is initialised.

    That key is readable by site admins only (403 to other users) and answers before
    initialisation too. ``GET /xapi/siteConfig`` cannot tell: after initialisation it answers a
    non-admin 200 with the keys every user may read. A refused login is 401; some versions answer
    with the HTML login page instead."""
    try:
        response = client.request(
            "GET", "/xapi/siteConfig/initialized", ok=(200, 401, 403), expect="json"
        )
    except XnatSetupPageError:
        return "refused", False
    if response.status_code == 401:
        return "refused", False
    if response.status_code == 403:
        return "user", False
    try:
        value = response.json()
    except ValueError:
        raise XnatHTTPError(
            "GET", "/xapi/siteConfig/initialized", 200, "the body is not JSON", client.url
        ) from None
    return "admin", reads.true(value)


def _initialized(client: XnatClient) -> bool:
    """``GET /xapi/siteConfig/initialized`` answers before initialisation (§6)."""
    return reads.true(client.get_json("/xapi/siteConfig/initialized"))


def _auth_error(desired: DesiredXnat, client: XnatClient, why: str) -> XnatAuthError:
    return XnatAuthError(
        "GET",
        "/xapi/siteConfig",
        401,
        f"{desired.host}: {why}; refusing to guess (docs/xnat-api.md §6, §18)",
        client.url,
    )


def detect(
    desired: DesiredXnat,
    probe: XnatClient,
    *,
    attempts: int = ADMIN_LOGIN_ATTEMPTS,
    delay: float = ADMIN_LOGIN_DELAY,
) -> SiteState:
    """Which credentials work, and whether XNAT is initialised (docs/xnat-api.md §6 steps 1-2).

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

    svc_kind, svc_initialized = _probe(svc)
    if svc_kind == "admin":
        if svc_initialized:
            return _detect_with_service(desired, svc, target, initial)
        # Uninitialised yet the service account is an admin: probe admin directly, once.
        admin_state: AdminPassword = "refused"
        if _probe(target)[0] == "admin":
            admin_state = "target"
        elif _probe(initial)[0] == "admin":
            admin_state = "initial"
        return SiteState(False, True, admin_state, version=_server_version(svc))

    for attempt in range(max(1, attempts)):
        for state, client in (("target", target), ("initial", initial)):
            kind, initialized = _probe(client)
            if kind == "admin":
                password: AdminPassword = "target" if state == "target" else "initial"
                return SiteState(initialized, False, password, version=_server_version(client))
        if attempt + 1 < attempts:
            time.sleep(delay)
    if svc_kind == "user":
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
    roles = svc.get_json(f"/xapi/users/{user}/roles") or []  # docs/xnat-api.md §8
    groups = svc.get_json(f"/xapi/users/{user}/groups") or []  # docs/xnat-api.md §8
    version = _server_version(svc)
    missing_roles = tuple(r for r in service_roles(desired, version) if r not in roles)
    missing_groups = tuple(g for g in SERVICE_GROUPS if g not in groups)
    admin = reads.account(svc, ADMIN)  # docs/xnat-api.md §8 (500 for an unknown login)
    state: AdminPassword
    if admin is not None and not admin.enabled:
        state = "disabled"
    elif _probe(target)[0] == "admin":
        state = "target"
    elif _probe(initial)[0] == "admin":
        state = "initial"
    elif admin is None:
        state = "disabled"  # no admin account at all: nothing to rotate or disable
    else:
        state = "refused"
    return SiteState(True, True, state, missing_roles, missing_groups, version)


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
        account (docs/xnat-api.md §6 steps 3-5)."""
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


@dataclass(frozen=True)
class Current:
    """The identity switches (receivedFileUser, primaryAdminUsername) and whether guest is on."""

    switches: dict[str, Any]
    guest_enabled: bool


def read(ctx: HostContext, state: SiteState) -> Current:
    """On an initialised site, as whichever admin works; on an uninitialised one XNAT's defaults
    without a request (docs/xnat-api.md §7 table, §1 accounts: guest on, both switches admin)."""
    if not state.initialized:
        return Current({key: ADMIN for key in SWITCH_KEYS}, True)
    reader = _Credentials(ctx, state).reader()
    # docs/xnat-api.md §7: GET /xapi/siteConfig/values/{k1,k2}
    values = reader.get_json("/xapi/siteConfig/values/" + ",".join(SWITCH_KEYS)) or {}
    guest = reads.account(reader, GUEST)  # docs/xnat-api.md §8 (500 for an unknown login)
    return Current(
        {key: values.get(key) for key in SWITCH_KEYS}, guest is not None and guest.enabled
    )


def plan(ctx: HostContext, state: SiteState | None = None) -> list[Change]:
    """The bootstrap steps still needed, in order (docs/xnat-api.md §6 steps 3-7).

    ``state`` defaults to :func:`detect` with ``ctx.client``.
    """
    validate(ctx.desired)
    if state is None:
        state = detect(ctx.desired, ctx.client)
    return plan_changes(ctx, state, read(ctx, state))


def plan_changes(ctx: HostContext, state: SiteState, current: Current) -> list[Change]:
    """Pure: the bootstrap steps from the inventory, ``state`` and ``current`` (no request)."""
    d = ctx.desired
    validate(d)
    ctx.client.add_secret(*d.secrets)
    creds = _Credentials(ctx, state)
    changes: list[Change] = []

    if not state.initialized:
        changes.append(_initialise(d, creds))
    if state.admin_password == "initial":  # noqa: S105  # a state name, not a password
        changes.append(_rotate_admin(d, creds))
    if not state.service_account:
        changes.append(_create_service_account(d, creds, state.version))
    elif state.missing_roles or state.missing_groups:
        changes.append(_complete_service_account(d, creds, state))
    if any(v != d.service_user for v in current.switches.values()):
        changes.append(_switch_identity(d, creds, dict(current.switches)))
    if state.admin_password != "disabled":  # noqa: S105  # a state name, not a password
        changes.append(_disable_admin(creds))
    if current.guest_enabled:
        changes.append(_disable_guest(creds))
    return changes


def _initialise(d: DesiredXnat, creds: _Credentials) -> Change:
    keys = (*INIT_KEYS, *PATH_KEYS)
    payload: dict[str, Any] = {k: d.site_config[k] for k in keys if k in d.site_config}
    payload["initialized"] = True

    def apply() -> None:
        client = creds.admin()
        # docs/xnat-api.md §6 step 3 / §7: XNAT applies the other keys, then `initialized`.
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
        # docs/xnat-api.md §6 step 4: as admin with the initial password.
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
    for role in roles:  # docs/xnat-api.md §8: PUT /xapi/users/{u}/roles/{role}
        client.request("PUT", f"/xapi/users/{seg(user)}/roles/{seg(role)}")
    for group in groups:  # docs/xnat-api.md §8: PUT /xapi/users/{u}/groups/{group}
        client.request("PUT", f"/xapi/users/{seg(user)}/groups/{seg(group)}")


def _create_service_account(d: DesiredXnat, creds: _Credentials, version: str | None) -> Change:
    payload = _service_account_payload(d)
    roles = service_roles(d, version)

    def apply() -> None:
        client = creds.admin()
        # docs/xnat-api.md §6 step 5: POST /xapi/users -> 201 created, 409 exists
        response = client.request("POST", "/xapi/users", json=payload, ok=(200, 201, 409))
        if response.status_code == 409:
            # It exists but did not log in as an admin: it is the toolkit's own account, so its
            # password and flags are reset to the inventory's (docs/xnat-api.md §8, PUT of the
            # user).
            client.request(
                "PUT",
                f"/xapi/users/{seg(d.service_user)}",
                json={"password": d.service_password, "enabled": True, "verified": True},
                ok=PUT_USER_OK,
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
        # docs/xnat-api.md §6 step 6 / §7: POST /xapi/siteConfig; receivedFileUser must be an admin
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
        # docs/xnat-api.md §6 step 7
        creds.service().request(
            "PUT",
            f"/xapi/users/{ADMIN}",
            json={"enabled": False, "verified": False},
            ok=PUT_USER_OK,
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
        # docs/xnat-api.md §6 step 7 / §8: PUT /xapi/users/{u}/enabled/{flag}
        creds.service().request("PUT", f"/xapi/users/{GUEST}/enabled/false")

    return Change(
        AREA,
        "update",
        "user guest",
        before={"enabled": True},
        after={"enabled": False},
        apply=apply,
    )

"""Xsync pairing: a relay's projects pushed to the central XNAT (docs/xnat-api.md §16).

On a relay with ``desired.pairings`` the plan is, in apply order:

1. on the central: the project Q (only when missing; normally the central's own projects
   reconciler made it), the per-relay account ``central_account`` (enabled, verified, a random
   password nobody knows, no roles: it is only ever used through alias tokens, §6) and its
   Owner membership of Q (Member makes deletes fail, §16.1, §16.4);
2. on the relay: the Xsync site preferences (§16.2), changed keys only;
3. on the relay: each project's Xsync configuration (§16.3);
4. credentials: a pairing is "keyed" when the relay's credential check answers 200 (§16.4 step 3);
   otherwise a ``run`` change issues an alias token for the account on the central (§6), saves
   it on the relay (§16.4 step 2) and checks again.

Before any of it the relay and the central must run the same XNAT version (read from
``/xapi/siteConfig/buildInfo``, §7); the version also decides the content type of the Xsync
setup/credential calls (text/plain for XNAT <= 1.9, application/json for >= 1.10, §16.4, §16.7).

On a fresh relay (``ctx.fresh``) nothing is read on either host: the versions come from the
inventory, the central project counts as present when the central's inventory lists it, the
account and ownership are planned, and the apply closures accept what already exists.

Alias secrets live only inside the apply closures and are registered with both clients' scrubbers
before they are sent; no Change, message or exception shows one.
"""

from __future__ import annotations

import html
import re
import secrets as pysecrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests

from xnat_fleet.xnat import reads
from xnat_fleet.xnat.changes import SECRET, Change, ReconcileError
from xnat_fleet.xnat.client import OK_STATUSES, XnatClient, XnatError, seg
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat, XsyncPairing

AREA = "xsync"

TEXT_PLAIN = "text/plain"
APPLICATION_JSON = "application/json"

# docs/xnat-api.md §16.2: the plugin's defaults (what a fresh relay reports).
PREFS_DEFAULTS: dict[str, Any] = {
    "tokenRefreshInterval": "10 hours",
    "syncRetryInterval": "2 hours",
    "syncRetryCount": "2",
    "syncMaxUncompressedZipFileSize": -1,
}

# docs/xnat-api.md §16.4 step 3: statuses of the credential check that mean "not keyed".
_CHECK_NOT_KEYED = {
    400: "the relay could not connect to the central with the stored token (expired or revoked)",
    403: "no credentials stored for this project and host",
    404: "no credentials stored (project not configured)",
}

_SYNC_LEVELS = ("project_resources", "subject_resources", "subject_assessors", "imaging_sessions")


class XsyncError(XnatError):
    """An Xsync step failed on a live host (wrong content type, not an Owner, failed check).

    The message names the host and never contains a secret.
    """


# -- validation and versions -------------------------------------------------------------------


def parse_version(host: str, version: str) -> tuple[int, int]:
    """``(major, minor)`` of an XNAT version such as ``1.9.3.6`` or ``1.10.0-SNAPSHOT``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not match:
        raise ReconcileError(host, AREA, f"cannot read the XNAT version {version!r}")
    return int(match.group(1)), int(match.group(2))


def content_type_for(host: str, version: str) -> str:
    """Content type of Xsync's setup, credentials save/check and site-preference calls
    (docs/xnat-api.md §16.4, §16.7):
    the plugin builds for Java 8 (XNAT <= 1.9) consume text/plain, newer ones application/json."""
    return TEXT_PLAIN if parse_version(host, version) <= (1, 9) else APPLICATION_JSON


def validate(ctx: HostContext) -> None:
    """Check the desired pairings before any request; raise :class:`ReconcileError`."""
    d = ctx.desired
    if not d.pairings:
        return
    if d.kind != "relay":
        # docs/xnat-api.md §16.1: the Xsync jar runs on the source (relay) only.
        raise ReconcileError(d.host, AREA, f"sync links are for relays, not a {d.kind} host")
    parse_version(d.host, d.version)
    seen: dict[str, str] = {}
    for p in d.pairings:
        where = f"sync link {p.link.project} -> {p.link.central_project}"
        if p.link.project in seen:
            raise ReconcileError(
                d.host,
                AREA,
                f"{where}: project {p.link.project} already syncs to {seen[p.link.project]}; "
                "Xsync keeps one configuration per relay project (docs/xnat-api.md §16.3)",
            )
        seen[p.link.project] = f"{p.central_host}/{p.link.central_project}"
        parts = urlsplit(p.central_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or p.central_url.endswith("/")
            or p.central_url != p.central_url.strip()
        ):
            raise ReconcileError(
                d.host,
                AREA,
                f"{where}: central URL {p.central_url!r} must be a canonical http(s) URL without "
                "a trailing slash (it must match byte for byte, docs/xnat-api.md §16.2, §16.4)",
            )
        if p.central_host not in ctx.peers:
            raise ReconcileError(
                d.host, AREA, f"{where}: the central host {p.central_host} is not reachable here"
            )
        central = ctx.peers[p.central_host][0]
        if central.kind != "central":
            raise ReconcileError(
                d.host, AREA, f"{where}: {p.central_host} is a {central.kind}, not the central"
            )
        if central.version != d.version:
            raise ReconcileError(
                d.host,
                AREA,
                f"{where}: the inventory pins XNAT {d.version} here and {central.version} on "
                f"{p.central_host}; Xsync pairs only equal versions",
            )
        if not p.central_account:
            raise ReconcileError(d.host, AREA, f"{where}: no central account")
        for email in p.notification_emails:
            if "," in email or not email.strip():
                raise ReconcileError(d.host, AREA, f"{where}: bad notification e-mail {email!r}")


def build_version(client: XnatClient) -> str:
    """The version XNAT reports: ``GET /xapi/siteConfig/buildInfo`` field ``version`` (§7)."""
    info = client.get_json("/xapi/siteConfig/buildInfo")
    version = info.get("version") if isinstance(info, dict) else None
    if not isinstance(version, str) or not version:
        raise XsyncError(f"{client.url}: /xapi/siteConfig/buildInfo reports no version")
    return version


def _refuse_version_mismatch(host: str, relay_version: str, central: str, central_v: str) -> None:
    if relay_version != central_v:
        raise ReconcileError(
            host,
            AREA,
            f"the relay runs XNAT {relay_version} but the central {central} runs {central_v}; "
            "refusing to pair different versions (docs/xnat-api.md §16.7: the Xsync plugin build "
            "and its endpoints follow the XNAT version)",
        )


# -- shared session: versions, content type, central clients ------------------------------------


@dataclass
class XsyncSession:
    """What the pairing calls need on one relay: the content type and the central clients."""

    ctx: HostContext
    content_type: str
    relay_version: str
    centrals: dict[str, tuple[DesiredXnat, XnatClient]] = field(default_factory=dict)

    def central(self, host: str) -> tuple[DesiredXnat, XnatClient]:
        if host not in self.centrals:
            self.centrals[host] = self.ctx.peer(host)
        return self.centrals[host]


def open_session(ctx: HostContext, *, need_central: bool = True) -> XsyncSession:
    """Validate, read the versions (relay, and each central when ``need_central``), refuse a
    mismatch and pick the Xsync content type. On a fresh relay no request is made."""
    validate(ctx)
    d = ctx.desired
    relay_version = ctx.read(lambda: build_version(ctx.client), fresh=d.version)
    session = XsyncSession(ctx, content_type_for(d.host, relay_version), relay_version)
    if need_central:
        for host in dict.fromkeys(p.central_host for p in d.pairings):
            central_desired = ctx.peers[host][0]
            if ctx.fresh:
                central_version = central_desired.version
            else:
                central_version = build_version(session.central(host)[1])
            _refuse_version_mismatch(d.host, relay_version, host, central_version)
    return session


PLUGIN_ID = "xsyncPlugin"  # docs/xnat-api.md §14: @XnatPlugin(value = "xsyncPlugin", ...)


def plugin_version(ctx: HostContext) -> str:
    """The relay's Xsync plugin version: ``GET /xapi/plugins`` (a map keyed by plugin id, §14),
    else the inventory's."""
    try:
        plugins = ctx.client.get_json("/xapi/plugins")
        entry = plugins.get(PLUGIN_ID, {}) if isinstance(plugins, dict) else {}
        version = entry.get("version") if isinstance(entry, dict) else None
        if version:
            return str(version)
    except (XnatError, AttributeError):
        pass
    return ctx.desired.xsync_plugin_version or "unknown"


def xsync_post(
    session: XsyncSession, path: str, body: dict[str, Any], ok: tuple[int, ...]
) -> requests.Response:
    """POST a JSON document to an Xsync setup/credentials endpoint with the content type the XNAT
    version calls for (§16.4, §16.7); a 415 becomes an :class:`XsyncError` naming both."""
    ctx = session.ctx
    response = ctx.client.request(
        "POST", path, json=body, content_type=session.content_type, ok=(*ok, 415)
    )
    if response.status_code == 415:
        other = APPLICATION_JSON if session.content_type == TEXT_PLAIN else TEXT_PLAIN
        raise XsyncError(
            f"{ctx.host}: xsync: POST {path} answered HTTP 415 to Content-Type "
            f"{session.content_type}: XNAT {session.relay_version} calls for that content type, "
            f"but the installed Xsync plugin {plugin_version(ctx)} wants {other} "
            "(docs/xnat-api.md §16.4, §16.7: text/plain builds for XNAT <= 1.9, application/json "
            "for >= 1.10); install the plugin build made for this XNAT version"
        )
    return response


# -- desired documents ---------------------------------------------------------------------------


def desired_config(p: XsyncPairing) -> dict[str, Any]:
    """The project's Xsync configuration (skeleton and allowed values: docs/xnat-api.md §16.3)."""
    link = p.link
    return {
        "enabled": True,
        "source_project_id": link.project,
        "remote_url": p.central_url,
        "remote_project_id": link.central_project,
        "sync_frequency": link.frequency,
        "sync_new_only": link.new_only,
        "identifiers": link.identifiers,
        "customIdentifiers": link.custom_identifiers,
        "anonymize": link.anonymize,
        "notification_emails": ",".join(p.notification_emails),
        "no_of_retry_days": link.retry_days,
        "project_resources": {"sync_type": link.project_resources},
        "subject_resources": {"sync_type": link.subject_resources},
        "subject_assessors": {"sync_type": link.subject_assessors},
        "imaging_sessions": {"sync_type": link.imaging_sessions},
    }


def desired_prefs(d: DesiredXnat) -> dict[str, Any] | None:
    """Xsync site preferences (§16.2); ``syncRetryCount`` is a string in the plugin's bean."""
    x = d.xsync_prefs
    if x is None:
        return None
    return {
        "tokenRefreshInterval": x.token_refresh_interval,
        "syncRetryInterval": x.retry_interval,
        "syncRetryCount": str(x.retry_count),
        "syncMaxUncompressedZipFileSize": x.max_zip_size,
    }


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):  # a sync level: only sync_type is managed
        return isinstance(current, dict) and all(current.get(k) == v for k, v in wanted.items())
    if isinstance(wanted, bool) or isinstance(current, bool):
        return current is wanted
    if isinstance(wanted, int) or isinstance(current, int):  # "1073741824" == 1073741824
        return str(current).strip() == str(wanted)
    return bool(current == wanted)


def config_path(project: str) -> str:
    return f"/xapi/xsync/setup/projects/{seg(project)}"


# -- reads -----------------------------------------------------------------------------------------


def read_config(client: XnatClient, project: str) -> dict[str, Any] | None:
    """``GET /xapi/xsync/setup/projects/{p}`` (§16.3); 404 = not configured (§16.7)."""
    data = client.get_json(config_path(project), ok=(200, 204, 404), allow_empty=True)
    return data if isinstance(data, dict) else None


def check_credentials(session: XsyncSession, p: XsyncPairing) -> int:
    """``POST /xapi/xsync/credentials/check/projects/{p}`` ``{host, localProject}``
    (§16.4 step 3): 200 = keyed; 400 could not connect; 403 nothing stored."""
    response = xsync_post(
        session,
        f"/xapi/xsync/credentials/check/projects/{seg(p.link.project)}",
        {"host": p.central_url, "localProject": p.link.project},
        ok=(200, *_CHECK_NOT_KEYED),
    )
    return response.status_code


def _project_level(client: XnatClient, project: str, username: str) -> str | None:
    """The user's level in the project: group ids ``{project}_owner|_member|_collaborator``
    (docs/xnat-api.md §9, §16.4), from the shared membership read."""
    groups = reads.project_members(client, project).get(username, [])
    for group, level in (
        ("Owners", "owner"),
        ("Members", "member"),
        ("Collaborators", "collaborator"),
    ):
        if group in groups:
            return level
    return None


# -- writes (used by the apply closures and by xsync_ops) -----------------------------------------


def _project_xml(project: str, name: str, description: str) -> str:
    """An ``xnat:projectData`` document (docs/xnat-api.md §9; JSON is rejected)."""
    q = html.escape
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<xnat:projectData xmlns:xnat="http://nrg.wustl.edu/xnat" ID="{q(project)}" '
        f'secondary_ID="{q(project)}">\n'
        f"  <xnat:name>{q(name)}</xnat:name>\n"
        f"  <xnat:description>{q(description)}</xnat:description>\n"
        "</xnat:projectData>\n"
    )


def _create_central_project(client: XnatClient, project: str, name: str, desc: str) -> None:
    """``POST /data/projects`` with XML, like BNC (docs/xnat-api.md §9, §17); 409 = it exists."""
    client.request(
        "POST",
        "/data/projects",
        text=_project_xml(project, name, desc),
        content_type="text/xml",
        ok=(200, 201, 409),
    )


def _create_account(client: XnatClient, relay: str, username: str, email: str) -> None:
    """``POST /xapi/users`` (201; 409 exists, then only enabled/verified are set) (§8). The
    password is random and forgotten: the account is used only through alias tokens (§6)."""
    password = pysecrets.token_urlsafe(32)
    client.add_secret(password)
    response = client.request(
        "POST",
        "/xapi/users",
        json={
            "username": username,
            "password": password,
            "firstName": "Xsync",
            "lastName": relay,
            "email": email,
            "enabled": True,
            "verified": True,
        },
        ok=(200, 201, 409),
    )
    if response.status_code == 409:
        _enable_account(client, username)


def _enable_account(client: XnatClient, username: str) -> None:
    """``PUT /xapi/users/{u}`` ``{enabled, verified}`` (docs/xnat-api.md §8)."""
    client.request(
        "PUT",
        f"/xapi/users/{seg(username)}",
        json={"enabled": True, "verified": True},
        ok=(*OK_STATUSES, 304),  # docs/xnat-api.md §8: 304 when nothing changed
    )


def _make_owner(client: XnatClient, project: str, username: str) -> None:
    """``PUT /data/projects/{Q}/users/Owners/{u}`` (docs/xnat-api.md §9, §16.1: Owner, not
    Member)."""
    client.request("PUT", f"/data/projects/{seg(project)}/users/Owners/{seg(username)}")


def _expiry_text(value: Any) -> str:
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        stamp = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value else "unknown"


def issue_and_save(session: XsyncSession, p: XsyncPairing) -> str:
    """Re-key one pairing (docs/xnat-api.md §16.4): issue an alias token for the central account as
    the central service admin (``GET /data/services/tokens/issue/user/{u}``, §6), save it on the
    relay, check it. Returns a message without secrets; raises :class:`XsyncError`."""
    ctx = session.ctx
    _central_desired, central = session.central(p.central_host)
    account = p.central_account
    token = central.get_json(f"/data/services/tokens/issue/user/{seg(account)}")
    if not isinstance(token, dict) or not token.get("alias") or not token.get("secret"):
        raise XsyncError(
            f"{p.central_host}: xsync: issuing an alias token for {account} returned no "
            "alias/secret (docs/xnat-api.md §6)"
        )
    alias, secret = str(token["alias"]), str(token["secret"])
    for c in (ctx.client, central):
        c.add_secret(alias, secret)
    expires = token.get("estimatedExpirationTime")
    where = (
        f"{ctx.host}: xsync: project {p.link.project} -> {p.central_host}/{p.link.central_project}"
    )
    # §16.4 step 2: the relay reads {host}/data/archive/projects/{Q}/users with the token.
    response = xsync_post(
        session,
        f"/xapi/xsync/credentials/save/projects/{seg(p.link.project)}",
        {
            "host": p.central_url,
            "localProject": p.link.project,
            "remoteProject": p.link.central_project,
            "syncNewOnly": p.link.new_only,
            "alias": alias,
            "secret": secret,
            "username": account,
            "estimatedExpirationTime": expires,
        },
        ok=(200, 202, 400, 403),
    )
    del alias, secret, token
    status = response.status_code
    excerpt = ctx.client.scrub(response.text.strip().replace("\n", " "))[:200]
    if status == 202:
        raise XsyncError(
            f"{where}: credential save answered HTTP 202 ({excerpt}): {account} is not an Owner "
            f"of {p.link.central_project} on {p.central_host} (a Member cannot delete, "
            "docs/xnat-api.md §16.1, §16.4); make it an Owner (xnat-fleet plan shows the change)"
        )
    if status == 403:
        raise XsyncError(
            f"{where}: credential save answered HTTP 403 ({excerpt}): {account} has no access "
            f"to {p.link.central_project} on {p.central_host} or is only a Collaborator (§16.4)"
        )
    if status == 400:
        raise XsyncError(f"{where}: credential save answered HTTP 400 ({excerpt}) (§16.4)")
    check = check_credentials(session, p)
    if check != 200:
        raise XsyncError(
            f"{where}: saved credentials but the check answered HTTP {check}: "
            f"{_CHECK_NOT_KEYED.get(check, 'unexpected answer')} (docs/xnat-api.md §16.4)"
        )
    return (
        f"{p.link.project} -> {p.central_url} project {p.link.central_project}: re-keyed as "
        f"{account}; check OK; token expires {_expiry_text(expires)}"
    )


# -- read ------------------------------------------------------------------------------------------
# Reads and writes on the central go through ``session.central(host)`` so that a fresh relay's
# plan connects to nothing; functools.partial binds the loop values of each apply.


def _on_central(session: XsyncSession, host: str) -> XnatClient:
    return session.central(host)[1]


@dataclass
class Current:
    """What the pairing plan needs to know, read once (only GETs).

    ``central_projects``: (central host, project) pairs that exist; ``accounts``: the per-relay
    accounts on their central host (None: no such login); ``levels``: the account's level in each
    central project; ``prefs``: the relay's Xsync site preferences (None when not managed);
    ``configs``: each relay project's Xsync configuration (None: not configured)."""

    central_projects: set[tuple[str, str]] = field(default_factory=set)
    accounts: dict[tuple[str, str], reads.Account | None] = field(default_factory=dict)
    levels: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    prefs: dict[str, Any] | None = None
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def _read_central(session: XsyncSession, current: Current) -> None:
    ctx = session.ctx
    for host in dict.fromkeys(p.central_host for p in ctx.desired.pairings):
        pairings = [p for p in ctx.desired.pairings if p.central_host == host]
        if ctx.fresh:
            # The central's own projects reconciler makes the projects its inventory lists.
            listed = {s.project.id for s in ctx.peers[host][0].projects}
            current.central_projects |= {
                (host, p.link.central_project) for p in pairings if p.link.central_project in listed
            }
            current.accounts.update({(host, p.central_account): None for p in pairings})
            continue
        client = _on_central(session, host)
        existing = reads.list_projects(client)
        current.central_projects |= {
            (host, p.link.central_project) for p in pairings if p.link.central_project in existing
        }
        known = reads.logins(client)
        for p in pairings:
            key = (host, p.central_account)
            if key not in current.accounts:
                current.accounts[key] = reads.account(client, p.central_account, known)
            level_key = (host, p.link.central_project, p.central_account)
            if current.accounts[key] is not None and (host, p.link.central_project) in (
                current.central_projects
            ):
                current.levels[level_key] = _project_level(
                    client, p.link.central_project, p.central_account
                )


def read_prefs(session: XsyncSession) -> dict[str, Any]:
    """``GET /xapi/xsyncSitePreferences`` (docs/xnat-api.md §16.2; on the Java-21 builds only
    holders of the XsyncAdministrator role may read it, which bootstrap grants)."""
    data = session.ctx.client.get_json("/xapi/xsyncSitePreferences")
    return data if isinstance(data, dict) else {}


def read(session: XsyncSession) -> Current:
    """The central projects, accounts and memberships, the relay's preferences and configs."""
    ctx = session.ctx
    current = Current()
    _read_central(session, current)
    if desired_prefs(ctx.desired) is not None:
        current.prefs = ctx.read(partial(read_prefs, session), fresh=dict(PREFS_DEFAULTS))
    for p in ctx.desired.pairings:
        current.configs[p.link.project] = ctx.read(
            partial(read_config, ctx.client, p.link.project), fresh=None
        )
    return current


# -- writes bound by the plan ----------------------------------------------------------------------
def _create_project_on(
    session: XsyncSession, host: str, project: str, name: str, desc: str
) -> None:
    _create_central_project(_on_central(session, host), project, name, desc)


def _create_account_on(session: XsyncSession, host: str, username: str, email: str) -> None:
    _create_account(_on_central(session, host), session.ctx.host, username, email)


def _enable_account_on(session: XsyncSession, host: str, username: str) -> None:
    _enable_account(_on_central(session, host), username)


def _drop_role_on(session: XsyncSession, host: str, username: str, role: str) -> None:
    """``DELETE /xapi/users/{u}/roles/{role}`` (docs/xnat-api.md §8)."""
    _on_central(session, host).request("DELETE", f"/xapi/users/{seg(username)}/roles/{seg(role)}")


def _make_owner_on(session: XsyncSession, host: str, project: str, username: str) -> None:
    _make_owner(_on_central(session, host), project, username)


def _post_prefs(session: XsyncSession, diff: dict[str, Any]) -> None:
    """``POST /xapi/xsyncSitePreferences`` with the changed keys only (docs/xnat-api.md §16.2):
    the JSON document as text/plain on the Java-8 builds (XNAT <= 1.9), application/json on the
    Java-21 builds (1.10+), the same split as the setup and credential calls."""
    xsync_post(session, "/xapi/xsyncSitePreferences", diff, ok=(200, 201, 204))


def _post_config(session: XsyncSession, project: str, document: dict[str, Any]) -> None:
    """``POST /xapi/xsync/setup/projects/{p}`` (docs/xnat-api.md §16.3, content type §16.7)."""
    xsync_post(session, config_path(project), document, ok=(200, 201))


def _apply_credentials(session: XsyncSession, p: XsyncPairing, document: dict[str, Any]) -> None:
    """Issue, save and check the credentials, then switch the project's sync on."""
    issue_and_save(session, p)
    _post_config(session, p.link.project, document)


# -- plan (pure) -----------------------------------------------------------------------------------
def _project_change(session: XsyncSession, p: XsyncPairing, current: Current) -> list[Change]:
    ctx = session.ctx
    host, q = p.central_host, p.link.central_project
    if (host, q) in current.central_projects:
        return []
    spec = next((s for s in ctx.peers[host][0].projects if s.project.id == q), None)
    name = spec.project.name if spec else q
    desc = (spec.project.description if spec else "") or (
        f"Xsync destination of {ctx.host}/{p.link.project}"
    )
    return [
        Change(
            AREA,
            "create",
            f"{host}: project {q}",
            after={"ID": q, "name": name},
            apply=partial(_create_project_on, session, host, q, name, desc),
        )
    ]


def _account_changes(
    session: XsyncSession, p: XsyncPairing, acct: reads.Account | None
) -> list[Change]:
    host, account = p.central_host, p.central_account
    target = f"{host}: user {account}"
    if acct is None:
        central = session.ctx.peers[host][0]
        email = (
            p.notification_emails[0]
            if p.notification_emails
            else str(central.site_config.get("adminEmail", ""))
        )
        return [
            Change(
                AREA,
                "create",
                target,
                after={
                    "username": account,
                    "password": SECRET,
                    "enabled": True,
                    "verified": True,
                    "roles": [],
                },
                detail="a random password nobody knows; used only through alias tokens",
                apply=partial(_create_account_on, session, host, account, email),
            )
        ]
    changes: list[Change] = []
    if not (acct.enabled and acct.verified):
        changes.append(
            Change(
                AREA,
                "update",
                target,
                before={"enabled": acct.enabled, "verified": acct.verified},
                after={"enabled": True, "verified": True},
                apply=partial(_enable_account_on, session, host, account),
            )
        )
    changes.extend(
        Change(
            AREA,
            "delete",
            f"{target} role {role}",
            before=role,
            detail="the Xsync account holds no roles",
            apply=partial(_drop_role_on, session, host, account, role),
        )
        for role in acct.roles
    )
    return changes


def _owner_change(session: XsyncSession, p: XsyncPairing, current: Current) -> list[Change]:
    host, q, account = p.central_host, p.link.central_project, p.central_account
    level = current.levels.get((host, q, account))
    if level == "owner":
        return []
    return [
        Change(
            AREA,
            "update" if level else "create",
            f"{host}: project {q} owner {account}",
            before={"level": level} if level else None,
            after={"level": "owner"},
            detail="Xsync needs an Owner: a Member cannot delete (docs/xnat-api.md §16.1)",
            apply=partial(_make_owner_on, session, host, q, account),
        )
    ]


def _central_changes(session: XsyncSession, current: Current) -> list[Change]:
    changes: list[Change] = []
    accounts: set[tuple[str, str]] = set()
    projects: set[tuple[str, str]] = set()
    for p in session.ctx.desired.pairings:
        if (p.central_host, p.link.central_project) not in projects:
            projects.add((p.central_host, p.link.central_project))
            changes += _project_change(session, p, current)
        key = (p.central_host, p.central_account)
        if key not in accounts:
            accounts.add(key)
            changes += _account_changes(session, p, current.accounts.get(key))
        changes += _owner_change(session, p, current)
    return changes


def _prefs_change(session: XsyncSession, current: dict[str, Any] | None) -> list[Change]:
    wanted = desired_prefs(session.ctx.desired)
    if wanted is None:
        return []
    have = current or {}
    diff = {k: v for k, v in wanted.items() if not _same(have.get(k), v)}
    if not diff:
        return []
    return [
        Change(
            AREA,
            "update",
            "xsync site preferences",
            before={k: have.get(k) for k in diff},
            after=diff,
            apply=partial(_post_prefs, session, diff),
        )
    ]


def keyed(p: XsyncPairing, config: dict[str, Any] | None) -> bool:
    """Whether the pairing counts as keyed: its configuration points at this central and is
    enabled. A configuration is switched on only after its credentials were saved and checked
    (see :func:`_config_changes`), so an interrupted keying leaves it off and is re-run. Whether
    a stored token still works is an operation (``xsync status``), never a planning question:
    the credential check is a POST that logs in on the central."""
    return (
        config is not None
        and config.get("remote_url") == p.central_url
        and _same(config.get("enabled"), True)
    )


def _config_changes(
    session: XsyncSession, p: XsyncPairing, current: dict[str, Any] | None
) -> tuple[list[Change], list[Change]]:
    """(configuration changes, credential changes) of one pairing."""
    wanted = desired_config(p)
    project = p.link.project
    target = f"project {project} sync config"
    merged = dict(current or {})
    diff = [k for k, v in wanted.items() if current is None or not _same(current.get(k), v)]
    # The setup endpoint stores the whole document: keep the keys the inventory does not manage
    # (e.g. imaging_sessions.xsi_types) and replace the differing ones.
    for k in diff:
        old, new = merged.get(k), wanted[k]
        merged[k] = {**old, **new} if isinstance(old, dict) and isinstance(new, dict) else new
    if keyed(p, current):
        if not diff:
            return [], []
        change = Change(
            AREA,
            "update",
            target,
            before={k: current.get(k) for k in diff} if current else None,
            after={k: wanted[k] for k in diff},
            apply=partial(_post_config, session, project, merged),
        )
        return [change], []
    # Not keyed for this central: configure it switched off, key it, then switch it on.
    parked = {**merged, "enabled": False}
    if current is None:
        config = Change(
            AREA,
            "create",
            target,
            after=wanted,
            detail="posted with enabled=false; enabled once its credentials are saved",
            apply=partial(_post_config, session, project, parked),
        )
    else:
        detail = "enabled once its credentials are saved"
        if "remote_url" in diff:
            detail = (
                "changing remote_url makes Xsync re-send everything (docs/xnat-api.md §16.3); "
                "the credentials are re-keyed for the new host, then the sync is enabled"
            )
        config = Change(
            AREA,
            "update",
            target,
            before={k: current.get(k) for k in diff},
            after={k: wanted[k] for k in diff},
            detail=detail,
            apply=partial(_post_config, session, project, parked),
        )
    reason = (
        "not configured for this host yet"
        if current is None or current.get("remote_url") != p.central_url
        else "configured but not enabled (keying not finished)"
    )
    credentials = Change(
        AREA,
        "run",
        f"project {project} credentials for {p.central_url}",
        before=reason,
        after={
            "action": "issue, save and check credentials, then enable the sync",
            "host": p.central_url,
            "remoteProject": p.link.central_project,
            "username": p.central_account,
            "secret": SECRET,
        },
        apply=partial(_apply_credentials, session, p, {**merged, "enabled": True}),
    )
    return [config], [credentials]


def plan(ctx: HostContext) -> list[Change]:
    """The pairing changes of a relay (empty on hosts without sync links). Order: central
    project/account/ownership, site preferences, project configs, credentials."""
    if not ctx.desired.pairings:
        return []
    session = open_session(ctx)
    return plan_changes(session, read(session))


def plan_changes(session: XsyncSession, current: Current) -> list[Change]:
    """Pure: the pairing changes from the inventory and ``current`` (no request is sent)."""
    changes = _central_changes(session, current)
    changes += _prefs_change(session, current.prefs)
    credentials: list[Change] = []
    for p in session.ctx.desired.pairings:
        config, keys = _config_changes(session, p, current.configs.get(p.link.project))
        changes += config
        credentials += keys
    return changes + credentials

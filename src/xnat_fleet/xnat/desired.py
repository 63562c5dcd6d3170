"""The desired state of one XNAT, derived from the validated inventory, its secrets and files.

Reconcilers compare this with what XNAT reports; nothing here talks to XNAT.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_fleet.model.fleet import (
    ContainerService,
    EventSubscription,
    Fleet,
    Host,
    Project,
    Receiver,
    SyncLink,
    XnatUser,
    XsyncPreferences,
)

INITIAL_ADMIN_PASSWORD = "admin"  # noqa: S105  # XNAT's documented first-start password (§6)
XNAT_ROOT = "/data/xnat"  # the xnat role's xnat_root (playbooks/group_vars/all/xnat.yml)


class DesiredStateError(Exception):
    """The inventory cannot be turned into XNAT's desired state (missing secret or file)."""


@dataclass(frozen=True)
class ProjectSpec:
    """A project as XNAT should hold it, with its anonymization script text resolved."""

    project: Project
    anon_script: str | None = None  # script text (None: leave no project script)
    anon_enabled: bool = False


@dataclass(frozen=True)
class XsyncPairing:
    """One sync link of a relay, with everything the pairing needs on both ends."""

    link: SyncLink
    central_host: str
    central_url: str  # canonical, no trailing slash: identical in setup, credentials, allow-list
    central_account: str  # per-relay service account on the central host (Owner of the project)
    notification_emails: tuple[str, ...]


@dataclass(frozen=True)
class DesiredXnat:
    host: str
    kind: str  # "central" | "relay"
    url: str  # REST base URL, no trailing slash
    version: str  # the XNAT version the inventory pins
    ca_file: str | None  # study CA certificate (controller path) to verify TLS against
    admin_password: str
    service_user: str
    service_password: str
    site_config: dict[str, Any]  # siteConfig keys -> native JSON values (§7)
    smtp: dict[str, Any]  # hostname, port, protocol, username, password (§15)
    users: tuple[XnatUser, ...]
    user_passwords: Mapping[str, str]
    projects: tuple[ProjectSpec, ...]
    site_anon_script: str | None
    site_anon_enabled: bool
    receivers: tuple[Receiver, ...]
    container_service: ContainerService | None
    commands: tuple[dict[str, Any], ...]  # parsed command JSON files
    subscriptions: tuple[EventSubscription, ...]
    pairings: tuple[XsyncPairing, ...]
    xsync_prefs: XsyncPreferences | None  # relays with links only
    xsync_plugin_version: str | None
    initial_admin_password: str = INITIAL_ADMIN_PASSWORD
    central_accounts: tuple[str, ...] = field(default=())  # per-relay Xsync accounts (central)

    @property
    def secrets(self) -> tuple[str, ...]:
        values = [self.admin_password, self.service_password, *self.user_passwords.values()]
        if self.smtp.get("password"):
            values.append(str(self.smtp["password"]))
        return tuple(v for v in values if v)


def host_url(host: Host) -> str:
    c = host.config
    if c.fleet_xnat_url:
        return c.fleet_xnat_url.rstrip("/")
    return f"https://{c.fleet_fqdn or host.name}"


def xsync_account(relay: str) -> str:
    """The central account a relay's Xsync pushes as: one per relay, so one can be re-keyed or
    disabled alone."""
    return "xsync_" + "".join(ch if ch.isalnum() else "_" for ch in relay)


def _secret(host: str, secrets: Mapping[str, Any], name: str) -> str:
    value = secrets.get(name)
    if not isinstance(value, str) or not value:
        raise DesiredStateError(f"{host}: {name}: required secret missing; add it to the vault")
    return value


def _read(host: str, inventory_dir: Path, variable: str, rel: str) -> str:
    path = inventory_dir / rel
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DesiredStateError(
            f"{host}: {variable}: cannot read {rel} (relative to {inventory_dir}): {exc.strerror}"
        ) from None


def site_config(fleet: Fleet, host: Host) -> dict[str, Any]:
    """The siteConfig keys the inventory decides (docs/xnat-api.md §7, defaults table)."""
    c = host.config
    policy = c.fleet_xnat_site
    site_id = c.fleet_site.id if c.fleet_site else c.fleet_study.id
    # Provider ids as the xnat role writes them (playbooks/group_vars/central/xnat.yml): LDAP and
    # OpenID logins exist on the central host only; relays log in locally.
    providers = ["localdb"]
    if host.kind == "central" and c.fleet_ldap and c.fleet_ldap.enabled:
        providers.append("ldap1")
    if host.kind == "central" and c.fleet_openid and c.fleet_openid.enabled:
        providers.append(c.fleet_openid.provider_id)
    keys: dict[str, Any] = {
        "siteId": site_id,
        # The public URL, also when the API is reached another way (fleet_xnat_url).
        "siteUrl": f"https://{c.fleet_fqdn or host.name}",
        "adminEmail": c.fleet_study.admin_email,
        "archivePath": f"{XNAT_ROOT}/archive",
        "prearchivePath": f"{XNAT_ROOT}/prearchive",
        "cachePath": f"{XNAT_ROOT}/cache",
        "buildPath": f"{XNAT_ROOT}/build",
        "ftpPath": f"{XNAT_ROOT}/ftp",
        "pipelinePath": f"{XNAT_ROOT}/pipeline",
        "inboxPath": f"{XNAT_ROOT}/inbox",
        "enabledProviders": providers,
        "requireLogin": policy.require_login,
        "userRegistration": policy.user_registration,
        "par": policy.project_access_requests,
        "uiAllowNonAdminProjectCreation": policy.non_admin_project_creation,
        "restrictUserListAccessToAdmins": policy.restrict_user_list_to_admins,
        "sessionTimeout": policy.session_timeout,
        "aliasTokenTimeout": policy.alias_token_timeout,
        "sessionXmlRebuilderInterval": policy.prearchive_idle_minutes,
        "enableDicomReceiver": policy.dicom_receiver_enabled,
        "maxFailedLogins": policy.max_failed_logins,
        # Keep auto-archive possible for prearchive codes 4/5 (docs/xnat-api.md §9, inferred).
        "projectAllowAutoArchive": True,
        # The service account owns received files and is the primary admin (§6 step 6).
        "receivedFileUser": c.fleet_xnat_service_user,
        "primaryAdminUsername": c.fleet_xnat_service_user,
    }
    keys.update(policy.extra)
    return keys


def build(
    fleet: Fleet, host_name: str, secrets: Mapping[str, Any], inventory_dir: Path
) -> DesiredXnat:
    """Desired state of ``host_name``; ``secrets`` are that host's ``vault_*`` variables."""
    host = next((h for h in fleet.hosts if h.name == host_name), None)
    if host is None:
        raise DesiredStateError(f"{host_name}: not a host of this inventory")
    c = host.config
    name = host.name

    projects: list[ProjectSpec] = []
    for i, p in enumerate(c.fleet_projects):
        anon = p.anonymization
        text = None
        if anon and anon.script:
            text = _read(
                name, inventory_dir, f"fleet_projects[{i}].anonymization.script", anon.script
            )
        projects.append(ProjectSpec(p, text, bool(anon and anon.enabled)))
    for link in c.fleet_sync:  # relay projects come from the sync links
        projects.append(
            ProjectSpec(
                Project(
                    id=link.project,
                    name=link.project_name or link.project,
                    prearchive_code=link.prearchive_code,
                )
            )
        )

    site_script = None
    if c.fleet_anonymization.script:
        site_script = _read(
            name, inventory_dir, "fleet_anonymization.script", c.fleet_anonymization.script
        )

    commands: list[dict[str, Any]] = []
    if c.fleet_container_service:
        for i, rel in enumerate(c.fleet_container_service.commands):
            var = f"fleet_container_service.commands[{i}]"
            try:
                data = json.loads(_read(name, inventory_dir, var, rel))
            except json.JSONDecodeError as exc:
                raise DesiredStateError(f"{name}: {var}: {rel} is not JSON: {exc}") from None
            if not isinstance(data, dict) or not data.get("name"):
                raise DesiredStateError(f"{name}: {var}: {rel} needs a command 'name'")
            commands.append(data)

    central = fleet.central
    central_url = host_url(central)
    pairings = tuple(
        XsyncPairing(
            link=link,
            central_host=central.name,
            central_url=central_url,
            central_account=xsync_account(name),
            notification_emails=tuple(link.notification_emails or [c.fleet_study.admin_email]),
        )
        for link in c.fleet_sync
    )
    passwords = secrets.get("vault_xnat_user_passwords") or {}
    if not isinstance(passwords, Mapping):
        raise DesiredStateError(f"{name}: vault_xnat_user_passwords: must be a mapping")
    for i, user in enumerate(c.fleet_xnat_users):
        if user.auth == "local" and not passwords.get(user.username):
            raise DesiredStateError(
                f"{name}: vault_xnat_user_passwords.{user.username}: required secret missing "
                f"for the local account fleet_xnat_users[{i}]; add it to the vault"
            )
    plugin = c.fleet_artifacts.plugins.get("xsync")
    ca_file = str(inventory_dir / c.fleet_ca.cert)
    return DesiredXnat(
        host=name,
        kind=host.kind,
        url=host_url(host),
        version=c.fleet_xnat.version,
        ca_file=ca_file,
        admin_password=_secret(name, secrets, "vault_xnat_admin_password"),
        service_user=c.fleet_xnat_service_user,
        service_password=_secret(name, secrets, "vault_xnat_service_password"),
        site_config=site_config(fleet, host),
        # XNAT mails through the host's postfix null client (smtp role), which relays to the
        # study's smarthost with its credentials; XNAT itself needs none.
        smtp={
            "hostname": "localhost",
            "port": 25,
            "protocol": "smtp",
            "username": "",
            "password": "",
        },
        users=tuple(c.fleet_xnat_users),
        user_passwords={u: str(p) for u, p in passwords.items()},
        projects=tuple(projects),
        site_anon_script=site_script,
        site_anon_enabled=c.fleet_anonymization.enabled,
        receivers=tuple(c.fleet_dicom_receivers),
        container_service=c.fleet_container_service,
        commands=tuple(commands),
        subscriptions=tuple(c.fleet_event_subscriptions),
        pairings=pairings,
        xsync_prefs=c.fleet_xsync if c.fleet_sync else None,
        xsync_plugin_version=plugin.version if plugin and "xsync" in c.fleet_plugins else None,
        central_accounts=tuple(xsync_account(r.name) for r in fleet.relays if r.config.fleet_sync)
        if host.kind == "central"
        else (),
    )

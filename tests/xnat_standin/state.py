"""In-memory model of the XNAT REST stand-in (tests only — this is NOT XNAT).

Plain dataclasses and dicts that tests read and mutate directly, e.g. to simulate drift:
``state.site_config["siteId"] = "X"``, ``state.receivers[1]["port"] = 9999``,
``state.projects["P1"].prearchive_code = 7``, ``state.xsync_blocked["P1"] = True``.

Defaults and shapes come from ../shared/design/xnat-facts.md (section numbers cited inline).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# xnat-facts.md §11: DicomEdit 6.1 default/example site script. It relabels (Study Description :=
# project unless "Unassigned", Patient Name := subject, Patient ID := session); it does not
# de-identify. The exact shipped text is [VER]; this is the stand-in's rendition.
DEFAULT_ANON_SCRIPT = """\
//
// Default XNAT anonymization script (xnat-fleet test stand-in rendition, NOT XNAT's file)
//
version "6.1"
project != "Unassigned" ? (0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
"""

# xnat-facts.md §7 "Built-in defaults" (SCP), native JSON types; paths from §1/§4.
SITE_CONFIG_DEFAULTS: dict[str, Any] = {
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
    "sitewideAnonymizationScript": DEFAULT_ANON_SCRIPT,
    "sessionXmlRebuilderInterval": 5,
    "sessionXmlRebuilderRepeat": 60000,
    "sessionTimeout": "15 minutes",
    "aliasTokenTimeout": "2 days",
    "aliasTokenTimeoutSchedule": "0 0 * * * *",
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
    "processingUrl": "",
}

# xnat-facts.md §7 / §6 step 3: keys that must be non-empty before `initialized: true` is accepted.
INIT_REQUIRED_KEYS = ("siteId", "siteUrl", "adminEmail")

# xnat-facts.md §10 receiver JSON defaults (DicomSCPInstance).
RECEIVER_DEFAULTS: dict[str, Any] = {
    "aeTitle": "",
    "port": 0,
    "identifier": "dicomObjectIdentifier",
    "fileNamer": "",
    "enabled": True,
    "customProcessing": False,
    "directArchive": False,
    "anonymizationEnabled": True,
    "whitelistEnabled": False,
    "whitelist": [],
    "routingExpressionsEnabled": False,
    "projectRoutingExpression": "",
    "subjectRoutingExpression": "",
    "sessionRoutingExpression": "",
}

# xnat-facts.md §16.2 Xsync site preference defaults (XsyncSitePreferencesBean).
XSYNC_SITE_PREFS_DEFAULTS: dict[str, Any] = {
    "tokenRefreshInterval": "10 hours",
    "syncRetryInterval": "2 hours",
    "syncRetryCount": "2",
    "syncMaxUncompressedZipFileSize": -1,
    "httpsEnabled": True,
    "asperaEnabled": False,
}

# xnat-facts.md §9: project membership levels and their group-id suffixes (`{project}_owner`).
LEVEL_BY_PATH = {"Owners": "owner", "Members": "member", "Collaborators": "collaborator"}
SITE_GROUPS = ("ALL_DATA_ADMIN", "ALL_DATA_ACCESS")  # xnat-facts.md §8

_INTERVAL = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$", re.IGNORECASE)
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def interval_seconds(text: str) -> int:
    """Parse a PostgreSQL-style interval such as ``2 days`` (xnat-facts.md §6, §7)."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"not an interval: {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2).lower()]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class User:
    """An XNAT user (xnat-facts.md §8). ``password`` None = no password login (like guest)."""

    username: str
    password: str | None
    xdat_user_id: int
    enabled: bool = True
    verified: bool = True
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # site groups, e.g. ALL_DATA_ADMIN

    @property
    def is_admin(self) -> bool:
        return "Administrator" in self.roles


@dataclass
class AliasToken:
    """An alias token (xnat-facts.md §6): Basic ``alias:secret`` authenticates as ``username``."""

    alias: str
    secret: str
    username: str
    expires_ms: int
    valid: bool = True

    def usable(self) -> bool:
        return self.valid and self.expires_ms > now_ms()


@dataclass
class Project:
    """A project (xnat-facts.md §9, §11, §13); ``members``: username -> membership level."""

    id: str
    name: str
    secondary_id: str = ""
    description: str = ""
    accessibility: str = "private"
    prearchive_code: int = 0
    members: dict[str, str] = field(default_factory=dict)
    anon_script: str | None = None
    anon_enabled: bool = False
    # (command id, wrapper name) pairs enabled for this project (xnat-facts.md §13)
    wrappers_enabled: set[tuple[int, str]] = field(default_factory=set)


@dataclass
class State:
    """Everything the stand-in knows. Tests mutate it freely (hold ``lock`` against races)."""

    version: str = "1.9.3.6"
    xsync: bool = False
    xsync_content_type: str = "text/plain"
    name: str = "xnat"
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    site_config: dict[str, Any] = field(default_factory=lambda: dict(SITE_CONFIG_DEFAULTS))
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, AliasToken] = field(default_factory=dict)  # alias -> token
    sessions: dict[str, str] = field(default_factory=dict)  # JSESSIONID -> username
    smtp: dict[str, Any] = field(default_factory=dict)  # xnat-facts.md §15
    projects: dict[str, Project] = field(default_factory=dict)
    receivers: dict[int, dict[str, Any]] = field(default_factory=dict)  # xnat-facts.md §10
    events_prefs: dict[str, Any] = field(default_factory=lambda: {"enabled": False})  # §12
    subscriptions: dict[int, dict[str, Any]] = field(default_factory=dict)  # xnat-facts.md §12
    docker_server: dict[str, Any] = field(default_factory=dict)  # xnat-facts.md §13
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)  # xnat-facts.md §13
    wrappers_enabled: set[tuple[int, str]] = field(default_factory=set)  # site-level, §13
    # xnat-facts.md §8: CS >= 3.7.0 wants ContainerManager. The brief lets Administrator through
    # too; set True to require the ContainerManager role strictly.
    commands_require_container_manager: bool = False
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)  # xnat-facts.md §14

    # Xsync (xnat-facts.md §16), only served when ``xsync`` is True
    xsync_site_prefs: dict[str, Any] = field(
        default_factory=lambda: dict(XSYNC_SITE_PREFS_DEFAULTS)
    )
    xsync_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # project -> config
    xsync_credentials: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    xsync_status: dict[str, dict[str, Any]] = field(default_factory=dict)  # project -> status
    xsync_blocked: dict[str, bool] = field(default_factory=dict)
    xsync_history: list[dict[str, Any]] = field(default_factory=list)
    xsync_sync_requests: list[str] = field(default_factory=list)  # projects asked to sync
    # TLS verification for the stand-in's own outgoing calls (credential save/check, remoteREST):
    # True, False or a CA bundle path (Xsync uses the JVM truststore).
    xsync_remote_verify: bool | str = True

    _next_ids: dict[str, int] = field(default_factory=dict, repr=False)

    # -- helpers ----------------------------------------------------------------------------
    def next_id(self, kind: str) -> int:
        with self.lock:
            value = self._next_ids.get(kind, 0) + 1
            self._next_ids[kind] = value
            return value

    def add_user(self, username: str, password: str | None, **fields: Any) -> User:
        user = User(username, password, self.next_id("user"), **fields)
        self.users[username] = user
        return user

    def token_timeout_ms(self) -> int:
        return interval_seconds(str(self.site_config.get("aliasTokenTimeout", "2 days"))) * 1000

    def issue_token(self, username: str) -> AliasToken:
        """xnat-facts.md §6: a new alias token for ``username`` valid for aliasTokenTimeout."""
        with self.lock:
            token = AliasToken(
                alias=secrets.token_hex(8),
                secret=secrets.token_urlsafe(24),
                username=username,
                expires_ms=now_ms() + self.token_timeout_ms(),
            )
            self.tokens[token.alias] = token
            return token

    def expire_all_tokens(self) -> None:
        """Simulate the hourly sweep after aliasTokenTimeout passed (xnat-facts.md §6, §16.6)."""
        with self.lock:
            for token in self.tokens.values():
                token.expires_ms = now_ms() - 1

    def new_session(self, username: str) -> str:
        with self.lock:
            sid = secrets.token_hex(16).upper()
            self.sessions[sid] = username
            return sid

    def groups_of(self, username: str) -> list[str]:
        """Site groups plus project groups ``{project}_{level}`` (xnat-facts.md §8, §9)."""
        user = self.users[username]
        project_groups = [
            f"{p.id}_{p.members[username]}" for p in self.projects.values() if username in p.members
        ]
        return [*user.groups, *project_groups]

    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", self.version))


def new_state(
    *,
    version: str = "1.9.3.6",
    xsync: bool = False,
    xsync_content_type: str = "text/plain",
    initial_admin_password: str = "admin",
    name: str = "xnat",
) -> State:
    """A fresh, uninitialised site (xnat-facts.md §1 accounts, §10 default receiver, §14)."""
    state = State(version=version, xsync=xsync, xsync_content_type=xsync_content_type, name=name)
    # xnat-facts.md §1: built-in `admin` (site admin) and the anonymous `guest` account.
    state.add_user(
        "admin",
        initial_admin_password,
        email="you@yoursite.org",
        first_name="Admin",
        last_name="Admin",
        roles=["Administrator"],
    )
    state.add_user("guest", None, first_name="Guest", last_name="User")
    # xnat-facts.md §1 ports / §10: XNAT creates the default receiver AE `XNAT` on port 8104.
    rid = state.next_id("receiver")
    state.receivers[rid] = {
        **RECEIVER_DEFAULTS,
        "id": rid,
        "aeTitle": "XNAT",
        "port": 8104,
        "created": now_ms(),
        "timestamp": now_ms(),
    }
    # xnat-facts.md §13: container service's default backend is the local Docker socket.
    state.docker_server = {
        "id": 1,
        "name": "Local socket",
        "host": "unix:///var/run/docker.sock",
        "cert-path": "",
        "backend": "docker",
        "swarm-mode": False,
        "path-translation-xnat-prefix": "",
        "path-translation-docker-prefix": "",
        "pull-images-on-xnat-init": False,
        "container-user": "",
        "auto-cleanup": True,
        "max-concurrent-finalizing-jobs": None,
    }
    # xnat-facts.md §14: what `GET /xapi/plugins` lists.
    state.plugins["containers"] = {
        "id": "containers",
        "name": "Container Service Plugin (stand-in)",
        "version": "3.8.1",
    }
    if xsync:
        state.plugins["xsync"] = {
            "id": "xsync",
            "name": "XNAT Xsync Plugin (stand-in)",
            "version": "1.8.1",
        }
    return state

"""In-memory model of the XNAT REST stand-in (tests only — this is NOT XNAT).

Plain dataclasses and dicts that tests read and mutate directly, e.g. to simulate drift:
``state.site_config["siteId"] = "X"``, ``state.receivers[1]["port"] = 9999``,
``state.projects["P1"].prearchive_code = 7``, ``state.xsync_blocked["P1"] = True``.

Defaults and shapes come from docs/xnat-api.md (section numbers cited inline) and,
where that sheet was wrong, from XNAT's own source (repository, path and commit cited inline).

Version-dependent behaviour is a *setting* on :class:`State` (``xsync_build``,
``dicomscp_put_merge``, ``site_anon_put_reenables``, ``smtp_post_500``). :data:`STANDIN_PROFILES`
names one combination per XNAT line the toolkit supports; :func:`new_state` takes a ``profile``
(or derives one from ``version``) and lets each setting be overridden.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# docs/xnat-api.md §11: DicomEdit 6.1 default/example site script. It relabels (Study Description :=
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

# docs/xnat-api.md §7 "Built-in defaults" (SCP), native JSON types; paths from §1/§4.
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

# docs/xnat-api.md §7 / §6 step 3: keys that must be non-empty before `initialized: true` is
# accepted.
INIT_REQUIRED_KEYS = ("siteId", "siteUrl", "adminEmail")

# A bare DicomSCPInstance, i.e. what a JSON body binds into when a field is left out:
# NrgXnat/xnat web/src/main/java/org/nrg/dcm/scp/DicomSCPInstance.java@93d33cb: `_aeTitle`,
# `_identifier`, `_fileNamer` and the routing expressions have no default (null), `_port` is 0,
# `_enabled = true`, `_anonymizationEnabled = true`, the other flags false, `_whitelist` empty.
# Null fields are left out of the JSON answers (NrgXnat/xnat
# web/src/main/java/org/nrg/xnat/configuration/SerializerConfig.java@93d33cb:
# `serializationInclusion(JsonInclude.Include.NON_NULL)`).
RECEIVER_DEFAULTS: dict[str, Any] = {
    "aeTitle": None,
    "port": 0,
    "identifier": None,
    "fileNamer": None,
    "enabled": True,
    "customProcessing": False,
    "directArchive": False,
    "anonymizationEnabled": True,
    "whitelistEnabled": False,
    "whitelist": [],
    "routingExpressionsEnabled": False,
    "projectRoutingExpression": None,
    "subjectRoutingExpression": None,
    "sessionRoutingExpression": None,
}
# DICOM object identifier beans a stock XNAT knows (DicomSCPInstance.createDefault() uses the
# first; the DQR plugin would add `dqrObjectIdentifier`).
DICOM_OBJECT_IDENTIFIERS = ("dicomObjectIdentifier",)

# SMTP preferences of a fresh site: NrgXnat/xnat
# libs/xdat/src/main/java/org/nrg/xdat/preferences/NotificationsPreferences.java@93d33cb
# (`smtpHostname` default "localhost", `smtpPort` 25, `smtpProtocol` "smtp", `smtpAuth` and
# `smtpStartTls` false, no username/password/sslTrust). `mailProperties` holds the three
# dedicated mail preferences (`mail.smtp.auth`, `mail.smtp.starttls.enable`,
# `mail.smtp.ssl.trust`) and the `smtpMailProperties` preference (every other mail.* key).
SMTP_DEFAULTS: dict[str, Any] = {
    "hostname": "localhost",
    "port": 25,
    "protocol": "smtp",
    "username": "",
    "password": "",
    "mailProperties": {"mail.smtp.auth": "false", "mail.smtp.starttls.enable": "false"},
}

# What a non-admin may read of `GET /xapi/siteConfig` after initialisation: the "public" and
# "authenticated" lists of NrgXnat/xnat
# web/src/main/resources/META-INF/xnat/security/site-config-access.yaml@93d33cb (read through
# libs/xdat/.../AbstractJsonBasedPreferenceAccess.java `canRead`: authenticated includes public).
SITE_CONFIG_PUBLIC_KEYS = frozenset({"buildInfo", "siteHome", "siteId", "siteLogoPath", "siteUrl"})
SITE_CONFIG_AUTHENTICATED_KEYS = SITE_CONFIG_PUBLIC_KEYS | frozenset(
    {
        "checksums",
        "defaultProjectAutoArchiveSetting",
        "dicomFileNameTemplate",
        "displayHostName",
        "enableDicomReceiver",
        "enableSitewideAnonymizationScript",
        "enableSitewideSeriesImportFilter",
        "failMergeOn",
        "processingUrl",
        "projectAllowAutoArchive",
        "scanTypeMapping",
        "sessionXmlRebuilderInterval",
        "sessionXmlRebuilderRepeat",
        "siteDescriptionPage",
        "siteDescriptionText",
        "siteDescriptionType",
        "siteHomeLayout",
        "siteLandingLayout",
        "siteLoginLanding",
        "siteWideAlertMessage",
        "siteWideAlertStatus",
        "siteWideAlertType",
        "sitewideAnonymizationScript",
        "sitewidePetMr",
        "sitewidePetTracers",
        "sitewideSeriesImportFilter",
        "sitewideSeriesImportFilterMode",
        "uiAllowAdvancedSearch",
        "uiAllowBlockedSubjectAssessorView",
        "uiAllowMoreProjectInvestigators",
        "uiAllowNewUserComments",
        "uiAllowNonAdminProjectCreation",
        "uiAllowPetTracerConfiguration",
        "uiAllowProjectDelete",
        "uiAllowQuarantine",
        "uiAllowScanAddition",
        "uiAllowScanTypeModification",
        "uiAllowSubjectCreateFromExptEdit",
        "uiDateFormat",
        "uiDateTimeFormat",
        "uiDateTimeSecondsFormat",
        "uiDebugExtensionPoints",
        "uiDisplayScanModality",
        "uiDisplaySeriesClass",
        "uiDisplaySeriesDescription",
        "uiExptAllowLabelChange",
        "uiExptAllowProjectChange",
        "uiExptAllowSubjectChange",
        "uiHideCompressedUploaderUploadOption",
        "uiDefaultCompressedUploaderImporter",
        "uiHideDesktopClientDownload",
        "uiHideXnatUploadAssistantDownload",
        "uiLoginFailureMessage",
        "uiPrearchiveHideArchiveBtn",
        "uiShowLeftBar",
        "uiShowLeftBarBrowse",
        "uiShowLeftBarFavorites",
        "uiShowLeftBarProjects",
        "uiShowLeftBarSearch",
        "uiShowManageFiles",
        "uiShowPrearchiveFileActions",
        "uiShowProjectManageFiles",
        "uiShowRecentExptListDate",
        "uiShowRecentExptListScannerName",
        "uiShowScanTypeMapping",
        "uiTimeFormat",
        "zipExtensions",
    }
)

# docs/xnat-api.md §16.2 Xsync site preference defaults (XsyncSitePreferencesBean).
XSYNC_SITE_PREFS_DEFAULTS: dict[str, Any] = {
    "tokenRefreshInterval": "10 hours",
    "syncRetryInterval": "2 hours",
    "syncRetryCount": "2",
    "syncMaxUncompressedZipFileSize": -1,
    "httpsEnabled": True,
    "asperaEnabled": False,
}

# NrgXnat/xsync src/main/java/org/nrg/xsync/components/elements/ProjectSyncStatus.java@4043a29:
# the in-memory, per-node status `GET /xapi/xsync/syncStatus/projects/{p}` answers (a fresh one
# per project after startup: `syncType = SyncType.NONE_SINCE_STARTUP`, `isSyncing = false`).
# `syncStartTime`/`syncEndTime` are Dates rendered "yyyy-MM-dd hh:mm:ss" (12-hour clock);
# null fields are left out of the answer (XNAT's NON_NULL serializer).
PROJECT_SYNC_STATUS_DEFAULTS: dict[str, Any] = {
    "isSyncing": False,
    "syncType": "NONE_SINCE_STARTUP",
    "syncStartTime": None,
    "syncEndTime": None,
    "currentSubject": None,
    "currentExperiment": None,
    "currentExperimentType": None,
    "historyId": 0,
    "wasSyncSuccessful": None,
    "initialSubjectList": [],
    "completedSubjects": [],
    "failedSubjects": [],
    "completedExperiments": {},
    "failedExperiments": {},
}

XSYNC_BUILDS = ("java8", "java21")
# Plugin id and name: NrgXnat/xsync src/main/java/org/nrg/xsync/XsyncPlugin.java:
# `@XnatPlugin(value = "xsyncPlugin", name = "XSync Plugin", ...)`. Versions: the Java-8 line
# (1.8.1 with XNAT 1.9, 1.5.0 with 1.8: src/xnat_fleet/data/version-matrix.yml) and the Java-21
# develop line ("1.8.2-SNAPSHOT", built for XNAT 1.10).
XSYNC_PLUGIN_ID = "xsyncPlugin"


@dataclass(frozen=True)
class StandinProfile:
    """One combination of version-dependent XNAT behaviour (see :data:`STANDIN_PROFILES`)."""

    name: str
    version: str  # XNAT version reported by /xapi/siteConfig/buildInfo
    xsync_build: str  # "java8" (plugin builds for XNAT <= 1.9) or "java21" (XNAT 1.10)
    xsync_plugin_version: str
    dicomscp_put_merge: bool  # PUT /xapi/dicomscp/{id} merges (xnat-web bff1f28) or replaces
    site_anon_put_reenables: bool  # PUT /xapi/anonymize/site re-enables the site script
    smtp_post_500: bool  # POST /xapi/notifications {smtpServer} stores and then answers 500
    summary: str


STANDIN_PROFILES: dict[str, StandinProfile] = {
    # NrgXnat/xnat @93d33cb (web/ = xnat-web 4fb6bc1, ~1.8.11/1.9.0): PUT dicomscp binds a fresh
    # instance and calls saveDicomSCPInstance (since xnat-web 1f2175fe5, 2019-12, XNAT-6100);
    # the site script PUT only sets the preference (re-applied flag); the SMTP setter NPEs.
    "1.8": StandinProfile(
        name="1.8",
        version="1.8.10",
        xsync_build="java8",
        xsync_plugin_version="1.5.0",
        dicomscp_put_merge=False,
        site_anon_put_reenables=False,
        smtp_post_500=True,
        summary="XNAT 1.8 + Java-8 Xsync 1.5.0: dicomscp PUT replaces, site script PUT keeps "
        "the flag, SMTP POST stores then 500",
    ),
    "1.9": StandinProfile(
        name="1.9",
        version="1.9.3.6",
        xsync_build="java8",
        xsync_plugin_version="1.8.1",
        dicomscp_put_merge=False,
        site_anon_put_reenables=False,
        smtp_post_500=True,
        summary="XNAT 1.9 (monorepo-era web code) + Java-8 Xsync 1.8.1: as 1.8",
    ),
    # Later xnat-web 1.9.x builds (not ancestors of 4fb6bc1): DicomSCPApi.java@bff1f28 merges
    # with readerForUpdating(existing); AnonymizeApi.java@029e28c calls setSiteWideScript
    # (DefaultConfigService.replaceConfig without a status -> enabled).
    "1.9-bff1f28": StandinProfile(
        name="1.9-bff1f28",
        version="1.9.3.6",
        xsync_build="java8",
        xsync_plugin_version="1.8.1",
        dicomscp_put_merge=True,
        site_anon_put_reenables=True,
        smtp_post_500=True,
        summary="later xnat-web 1.9.x builds: dicomscp PUT merges, site script PUT re-enables",
    ),
    # The 1.10 line is the monorepo (NrgXnat/xnat); its init script (docker/init-xnat.sh@7d49637)
    # saw the SMTP "500 yet applied". Xsync builds for 1.10 are the Java-21 develop line.
    "1.10": StandinProfile(
        name="1.10",
        version="1.10.0",
        xsync_build="java21",
        xsync_plugin_version="1.8.2-SNAPSHOT",
        dicomscp_put_merge=False,
        site_anon_put_reenables=False,
        smtp_post_500=True,
        summary="XNAT 1.10 (monorepo) + Java-21 Xsync: JSON bodies, XsyncAdministrator role",
    ),
}


def _release_line(version: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def profile_for_version(version: str) -> StandinProfile:
    """The default profile for an XNAT version: its release line (1.10+ -> "1.10", 1.9 -> "1.9",
    anything older -> "1.8")."""
    line = _release_line(version)
    if line >= (1, 10):
        return STANDIN_PROFILES["1.10"]
    if line >= (1, 9):
        return STANDIN_PROFILES["1.9"]
    return STANDIN_PROFILES["1.8"]


def xsync_build_for_version(version: str) -> str:
    """Java-8 Xsync builds run on XNAT <= 1.9, Java-21 ones on 1.10+ (the XNAT 1.10 line is JDK 21;
    XS developer's guide: the develop branch "carries the migration to Java 21 / XNAT 1.10.1")."""
    return "java21" if _release_line(version) >= (1, 10) else "java8"


# docs/xnat-api.md §9: project membership levels and their group-id suffixes (`{project}_owner`).
LEVEL_BY_PATH = {"Owners": "owner", "Members": "member", "Collaborators": "collaborator"}
SITE_GROUPS = ("ALL_DATA_ADMIN", "ALL_DATA_ACCESS")  # docs/xnat-api.md §8

_INTERVAL = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$", re.IGNORECASE)
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def interval_seconds(text: str) -> int:
    """Parse a PostgreSQL-style interval such as ``2 days`` (docs/xnat-api.md §6, §7)."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"not an interval: {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2).lower()]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class User:
    """An XNAT user (docs/xnat-api.md §8). ``password`` None = no password login (like guest)."""

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
    """An alias token (docs/xnat-api.md §6): Basic ``alias:secret`` authenticates as
    ``username``."""

    alias: str
    secret: str
    username: str
    expires_ms: int
    valid: bool = True

    def usable(self) -> bool:
        return self.valid and self.expires_ms > now_ms()


@dataclass
class Project:
    """A project (docs/xnat-api.md §9, §11, §13); ``members``: username -> membership level."""

    id: str
    name: str
    secondary_id: str = ""
    description: str = ""
    accessibility: str = "private"
    prearchive_code: int = 0
    members: dict[str, str] = field(default_factory=dict)
    # The project's DicomEdit script is ONE config-service entry (contents + status): None = never
    # stored; `anon_enabled` is its status (NrgXnat/xnat
    # libs/config/src/main/java/org/nrg/config/services/impl/DefaultConfigService.java@93d33cb).
    anon_script: str | None = None
    anon_enabled: bool = False
    # (command id, wrapper name) pairs enabled for this project (docs/xnat-api.md §13)
    wrappers_enabled: set[tuple[int, str]] = field(default_factory=set)


def _fresh_smtp() -> dict[str, Any]:
    return {**SMTP_DEFAULTS, "mailProperties": dict(SMTP_DEFAULTS["mailProperties"])}


@dataclass
class State:
    """Everything the stand-in knows. Tests mutate it freely (hold ``lock`` against races).

    Settings (version-dependent XNAT behaviour, see :data:`STANDIN_PROFILES`):

    ``xsync_build``: "java8" (Xsync plugin builds for XNAT <= 1.9: text/plain bodies, admin
    check on site preferences) or "java21" (builds for 1.10: JSON bodies, ``XsyncAdministrator``
    role). ``dicomscp_put_merge``: ``PUT /xapi/dicomscp/{id}`` merges into the stored receiver
    (xnat-web bff1f28) instead of replacing it with the body. ``site_anon_put_reenables``:
    ``PUT /xapi/anonymize/site`` turns the site script back on (newer xnat-web builds).
    ``smtp_post_500``: ``POST /xapi/notifications`` with ``smtpServer`` stores part of it and
    then answers 500 (the NPE in NotificationsPreferences.setSmtpServer).
    """

    version: str = "1.9.3.6"
    xsync: bool = False
    name: str = "xnat"
    profile: str = "1.9"
    xsync_build: str = "java8"
    xsync_plugin_version: str = "1.8.1"
    dicomscp_put_merge: bool = False
    site_anon_put_reenables: bool = False
    smtp_post_500: bool = True
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    site_config: dict[str, Any] = field(default_factory=lambda: dict(SITE_CONFIG_DEFAULTS))
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, AliasToken] = field(default_factory=dict)  # alias -> token
    sessions: dict[str, str] = field(default_factory=dict)  # JSESSIONID -> username
    # The stored SMTP server (see SMTP_DEFAULTS for the shape).
    smtp: dict[str, Any] = field(default_factory=lambda: _fresh_smtp())
    projects: dict[str, Project] = field(default_factory=dict)
    # Invitations XNAT e-mails when a project member PUT names an unknown user:
    # (project, group id, the user id as given).
    project_invitations: list[tuple[str, str, str]] = field(default_factory=list)
    receivers: dict[int, dict[str, Any]] = field(default_factory=dict)  # docs/xnat-api.md §10
    dicom_object_identifiers: tuple[str, ...] = DICOM_OBJECT_IDENTIFIERS
    events_prefs: dict[str, Any] = field(default_factory=lambda: {"enabled": False})  # §12
    subscriptions: dict[int, dict[str, Any]] = field(default_factory=dict)  # docs/xnat-api.md §12
    docker_server: dict[str, Any] = field(default_factory=dict)  # docs/xnat-api.md §13
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)  # docs/xnat-api.md §13
    wrappers_enabled: set[tuple[int, str]] = field(default_factory=set)  # site-level, §13
    # NrgXnat/container-service src/main/java/org/nrg/containers/security/
    # ContainerManagerUserAuthorization.java@8590cb6: `Roles.checkRole(user, ContainerManager)`,
    # no site-admin bypass. False lets Administrator through as well (a looser stand-in).
    commands_require_container_manager: bool = True
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)  # docs/xnat-api.md §14

    # Xsync (docs/xnat-api.md §16), only served when ``xsync`` is True
    xsync_site_prefs: dict[str, Any] = field(
        default_factory=lambda: dict(XSYNC_SITE_PREFS_DEFAULTS)
    )
    xsync_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # project -> config
    xsync_credentials: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # project -> ProjectSyncStatus fields to show over PROJECT_SYNC_STATUS_DEFAULTS
    xsync_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    xsync_blocked: dict[str, bool] = field(default_factory=dict)
    # XsyncProjectHistory rows (NrgXnat/xsync src/main/java/org/nrg/xsync/manifest/
    # XsyncProjectHistory.java@12534f8): id, startDate, completeDate (epoch ms), remoteHost,
    # remoteProject, localProject, syncStatus, syncUser, totalSubjects, totalExperiments,
    # totalAssessors, totalResources, totalDataSynced, *Histories lists. See xsync_history_row().
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
        """docs/xnat-api.md §6: a new alias token for ``username`` valid for aliasTokenTimeout."""
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
        """Simulate the hourly sweep after aliasTokenTimeout passed (docs/xnat-api.md §6, §16.6)."""
        with self.lock:
            for token in self.tokens.values():
                token.expires_ms = now_ms() - 1

    def deactivate_tokens_of(self, username: str) -> None:
        """NrgXnat/xnat web/src/main/java/org/nrg/xapi/rest/users/UsersApi.java@93d33cb: disabling
        a user through PUT /xapi/users/{u} calls `_aliasTokenService.deactivateAllTokensForUser`."""
        with self.lock:
            for token in self.tokens.values():
                if token.username == username:
                    token.valid = False

    def new_session(self, username: str) -> str:
        with self.lock:
            sid = secrets.token_hex(16).upper()
            self.sessions[sid] = username
            return sid

    def groups_of(self, username: str) -> list[str]:
        """Site groups plus project groups ``{project}_{level}`` (docs/xnat-api.md §8, §9)."""
        user = self.users[username]
        project_groups = [
            f"{p.id}_{p.members[username]}" for p in self.projects.values() if username in p.members
        ]
        return [*user.groups, *project_groups]

    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", self.version))

    def run_init_tasks(self) -> None:
        """The plugins' initialisation tasks, run once the site is initialised: each grants its
        role to every enabled site admin, but only if nobody holds it yet.

        NrgXnat/container-service src/main/java/org/nrg/containers/initialization/tasks/
        AssignContainerManagerRoleToSiteAdminOnUpgrade.java@8590cb6 (`if
        (noUserIsAssignedContainerManagerRole(...))`, requires initialisation) and NrgXnat/xsync
        AssignXsyncAdministratorRoleToSiteAdminOnUpgrade.java@4355f43 (Java-21 builds only).
        """
        roles = ["ContainerManager"]
        if self.xsync and self.xsync_build == "java21":
            roles.append("XsyncAdministrator")
        with self.lock:
            for role in roles:
                if any(role in u.roles for u in self.users.values()):
                    continue
                for user in self.users.values():
                    if user.enabled and user.is_admin:
                        user.roles.append(role)


def xsync_history_row(
    project: str,
    sync_status: str,
    *,
    remote_host: str = "https://central.example.org",
    remote_project: str | None = None,
    sync_user: str = "admin",
    **fields: Any,
) -> dict[str, Any]:
    """One XsyncProjectHistory row as `GET /xapi/xsync/history[/projects/{p}]` lists it."""
    now = now_ms()
    row: dict[str, Any] = {
        "id": fields.pop("id", 0),
        "created": now,
        "timestamp": now,
        "enabled": True,
        "startDate": now,
        "completeDate": now,
        "remoteHost": remote_host,
        "remoteProject": remote_project or project,
        "localProject": project,
        "syncStatus": sync_status,
        "syncUser": sync_user,
        "totalSubjects": 0,
        "totalExperiments": 0,
        "totalAssessors": 0,
        "totalResources": 0,
        "totalDataSynced": "0 B",
        "subjectHistories": [],
        "experimentHistories": [],
        "assessorHistories": [],
        "resourceHistories": [],
    }
    row.update(fields)
    return row


def new_state(
    *,
    profile: str | None = None,
    version: str | None = None,
    xsync: bool = False,
    xsync_build: str | None = None,
    xsync_plugin_version: str | None = None,
    dicomscp_put_merge: bool | None = None,
    site_anon_put_reenables: bool | None = None,
    smtp_post_500: bool | None = None,
    initial_admin_password: str = "admin",
    name: str = "xnat",
) -> State:
    """A fresh, uninitialised site (docs/xnat-host.md §1 accounts, §10 default receiver, §14).

    ``profile`` (a key of :data:`STANDIN_PROFILES`) gives the version and every setting; without
    it they follow ``version`` (default 1.9.3.6) through :func:`profile_for_version`. Any setting
    passed explicitly wins; ``xsync_build`` defaults to the one for ``version``.
    """
    if profile is not None:
        if profile not in STANDIN_PROFILES:
            raise ValueError(f"unknown stand-in profile {profile!r}: {sorted(STANDIN_PROFILES)}")
        chosen = STANDIN_PROFILES[profile]
        version = version or chosen.version
    else:
        version = version or "1.9.3.6"
        chosen = profile_for_version(version)
    build = xsync_build or (chosen.xsync_build if profile else xsync_build_for_version(version))
    if build not in XSYNC_BUILDS:
        raise ValueError(f"xsync_build must be one of {XSYNC_BUILDS}, not {build!r}")
    default_plugin = chosen.xsync_plugin_version
    if build != chosen.xsync_build:
        default_plugin = "1.8.2-SNAPSHOT" if build == "java21" else "1.8.1"
    state = State(
        version=version,
        xsync=xsync,
        name=name,
        profile=chosen.name,
        xsync_build=build,
        xsync_plugin_version=xsync_plugin_version or default_plugin,
        dicomscp_put_merge=(
            chosen.dicomscp_put_merge if dicomscp_put_merge is None else dicomscp_put_merge
        ),
        site_anon_put_reenables=(
            chosen.site_anon_put_reenables
            if site_anon_put_reenables is None
            else site_anon_put_reenables
        ),
        smtp_post_500=chosen.smtp_post_500 if smtp_post_500 is None else smtp_post_500,
    )
    # docs/xnat-host.md §1: built-in `admin` (site admin) and the anonymous `guest` account. Their
    # legacy roles: NrgXnat/xnat init_security_000.sql@93d33cb (admin: Administrator, DataManager,
    # SiteUser; guest: SiteUser).
    state.add_user(
        "admin",
        initial_admin_password,
        email="you@yoursite.org",
        first_name="Admin",
        last_name="Admin",
        roles=["Administrator", "DataManager", "SiteUser"],
    )
    state.add_user("guest", None, first_name="Guest", last_name="User", roles=["SiteUser"])
    # docs/xnat-host.md §1 ports / §10: XNAT creates the default receiver AE `XNAT` on port 8104
    # (DicomSCPInstance.createDefault(): create("XNAT", 8104, "dicomObjectIdentifier")).
    rid = state.next_id("receiver")
    state.receivers[rid] = {
        **RECEIVER_DEFAULTS,
        "whitelist": [],
        "id": rid,
        "aeTitle": "XNAT",
        "port": 8104,
        "identifier": DICOM_OBJECT_IDENTIFIERS[0],
        "created": now_ms(),
        "timestamp": now_ms(),
    }
    # docs/xnat-api.md §13: container service's default backend is the local Docker socket.
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
    # `GET /xapi/plugins` is a map keyed by plugin id (NrgXnat/xnat
    # web/src/main/java/org/nrg/xapi/rest/XnatPluginApi.java@93d33cb, Map<String, XnatPluginBean>);
    # container-service's id is "containers" (ContainersConfig.java@8590cb6).
    state.plugins["containers"] = {
        "id": "containers",
        "name": "containers",
        "description": "Container Service",
        "version": "3.8.1",
    }
    if xsync:
        state.plugins[XSYNC_PLUGIN_ID] = {
            "id": XSYNC_PLUGIN_ID,
            "name": "XSync Plugin",
            "version": state.xsync_plugin_version,
        }
    return state

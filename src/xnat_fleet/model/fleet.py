"""Pydantic models of a study ("fleet"): the ``fleet_*`` variables of every inventory host.

Every model forbids unknown keys, so a misspelt variable is an error rather than a silent default.
Field names are the inventory's variable names: a validation error's location is the variable path
an administrator has to edit.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# XNAT's site id rule (docs/xnat-host.md §4: UCL asserts ^[A-Za-z][A-Za-z0-9_]*$); used for every
# id.
ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
# Unix account names as Debian's adduser accepts them by default.
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
SSH_KEY_PATTERN = (
    r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|sk-ssh-ed25519@openssh\.com)"
    r" [A-Za-z0-9+/=]+( .*)?$"
)


class Strict(BaseModel):
    """Base of every model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _ae_title(value: str) -> str:
    # DICOM PS3.5 AE: at most 16 characters of the default repertoire, no backslash, no control
    # characters; leading/trailing spaces are insignificant, so an all-space title is empty.
    if not 1 <= len(value) <= 16:
        raise ValueError(f"AE title {value!r} must be 1 to 16 characters long")
    if "\\" in value:
        raise ValueError(f"AE title {value!r} must not contain a backslash")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise ValueError(
            f"AE title {value!r} must hold printable ASCII only, no control characters"
        )
    if not value.strip():
        raise ValueError("AE title must not be blank")
    return value


def _ip_address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (scanners are admitted by address: give the "
            "scanner's IP, not a host name)"
        ) from None
    if address.is_unspecified:
        raise ValueError(f"{value} is the unspecified address, not the address of a scanner")
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return value


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _https_url(value: str) -> str:
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/\S*)?", value):
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


def _xnat_url(value: str) -> str:
    # https, or plain http on loopback only (the tests' XNAT stand-in and the demo).
    if not re.fullmatch(
        r"(https://[A-Za-z0-9.-]+|http://(127\.0\.0\.1|localhost))(:\d{1,5})?/?", value
    ):
        raise ValueError(f"{value!r} is not an https:// base URL (http only on 127.0.0.1)")
    return value.rstrip("/")


XnatUrl = Annotated[str, AfterValidator(_xnat_url)]
AETitle = Annotated[str, AfterValidator(_ae_title)]
IPAddress = Annotated[str, AfterValidator(_ip_address)]
Network = Annotated[str, AfterValidator(_network)]
Email = Annotated[str, AfterValidator(_email)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
# What fleet_allow_internet may open: the firewall's source lists (roles/firewall).
InternetService = Literal["ssh", "https", "dicom"]
HostName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", max_length=253)
]


def _interface_address(value: str) -> str:
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an address with its prefix length (e.g. 10.61.0.10/24)"
        ) from None
    if "/" not in value:
        raise ValueError(f"{value!r} needs its prefix length (e.g. {value}/24)")
    if interface.ip == interface.network.network_address and interface.network.prefixlen < 31:
        raise ValueError(f"{value} is the network's own address, not a host address")
    return value


def _mac(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", value):
        raise ValueError(f"{value!r} is not a MAC address in lower case (aa:bb:cc:dd:ee:ff)")
    return value


InterfaceAddress = Annotated[str, AfterValidator(_interface_address)]
MacAddress = Annotated[str, AfterValidator(_mac)]


class HostNetwork(Strict):
    """A relay's network as its clone configures it (systemd-networkd; docs/images.md).

    No ``address``: DHCP. The port is matched by ``mac`` when given, else any wired Ethernet
    port: never by an interface name, which differs between the build host and the box.
    """

    mac: MacAddress | None = None
    address: InterfaceAddress | None = None  # static: address/prefix; none: DHCP
    gateway: str | None = None
    dns: list[str] = []
    domains: list[HostName] = []

    @model_validator(mode="after")
    def _static(self) -> HostNetwork:
        for field, value in [("gateway", self.gateway), *(("dns", v) for v in self.dns)]:
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise ValueError(f"{field}: {value!r} is not an IP address") from None
        if self.address is None and self.gateway is not None:
            raise ValueError("gateway is given without address (a DHCP network gets its own)")
        if self.address is not None and self.gateway is not None:
            network = ipaddress.ip_interface(self.address).network
            if ipaddress.ip_address(self.gateway) not in network:
                raise ValueError(f"gateway {self.gateway} is outside {network}")
        return self


class Study(Strict):
    id: Identifier
    name: str = Field(min_length=1)
    admin_email: Email
    timezone: str = Field(default="Etc/UTC", pattern=r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$")


class Admin(Strict):
    name: str = Field(pattern=USER_PATTERN)
    comment: str = ""
    ssh_keys: list[Annotated[str, Field(pattern=SSH_KEY_PATTERN)]] = Field(min_length=1)


class Networks(Strict):
    admin: list[Network] = Field(min_length=1)
    ntp_servers: list[HostName] = []


class Smtp(Strict):
    smarthost: HostName
    port: Port = 587
    starttls: bool = True
    username: str | None = None  # SASL login; its password is the secret vault_smtp_password


class Ldap(Strict):
    enabled: bool = False
    url: Annotated[str, Field(pattern=r"^ldaps?://[A-Za-z0-9.-]+(:\d{1,5})?/?$")]
    bind_dn: str = Field(min_length=3)
    search_base: str = Field(min_length=3)
    search_filter: str = Field(default="(uid={0})", pattern=r"^\(.*\{0\}.*\)$")


class OpenId(Strict):
    enabled: bool = False
    provider_id: Identifier
    name: str = Field(min_length=1)
    issuer: HttpsUrl
    client_id: str = Field(min_length=1)
    # Endpoints from the provider's discovery document (<issuer>/.well-known/openid-configuration)
    authorization_endpoint: HttpsUrl
    token_endpoint: HttpsUrl
    userinfo_endpoint: HttpsUrl | None = None
    scopes: list[str] = ["openid", "profile", "email"]
    allowed_email_domains: list[HostName] = []


class CertificateFiles(Strict):
    cert: str = Field(min_length=1)  # path relative to the inventory directory
    key: str = Field(min_length=1)  # vault-encrypted file, relative to the inventory directory


class Site(Strict):
    id: Identifier
    name: str = Field(min_length=1)


class Scanner(Strict):
    name: str = Field(min_length=1)
    ae_title: AETitle
    address: IPAddress


# PostgreSQL interval strings XNAT's preferences take (docs/xnat-api.md §7), e.g. "2 days".
Interval = Annotated[
    str, Field(pattern=r"^[1-9][0-9]* (minute|minutes|hour|hours|day|days|week|weeks)$")
]
# Xsync's own interval setter accepts hours or minutes only (docs/xnat-api.md §16.2).
XsyncInterval = Annotated[str, Field(pattern=r"^[1-9][0-9]* (minutes|hours)$")]
XnatUsername = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
# A file of the inventory, relative to the inventory directory.
InventoryFile = Annotated[str, Field(pattern=r"^[^/\s][^\s]*$")]


class Receiver(Strict):
    """A DICOM C-STORE receiver (SCP) of XNAT (fields: docs/xnat-api.md §10)."""

    ae_title: AETitle
    port: Port
    # Route everything this AE receives to one project ("one AE per project", §10); else
    # XNAT's own routing (DICOM tags, site rules) decides.
    project: Identifier | None = None
    identifier: str = Field(default="dicomObjectIdentifier", min_length=1)
    anonymization: bool = True  # run site/project anonymization scripts on C-STORE (§11)
    enabled: bool = True
    custom_processing: bool = False
    direct_archive: bool = False
    whitelist: list[Annotated[str, Field(min_length=1)]] = []  # allowed callers; [] = anyone


class AnonScript(Strict):
    """A DicomEdit script kept in the inventory, and whether XNAT runs it (docs/xnat-api.md §11)."""

    script: InventoryFile | None = None
    enabled: bool = False

    @model_validator(mode="after")
    def _script_when_enabled(self) -> AnonScript:
        if self.enabled and self.script is None:
            raise ValueError("enabled: true needs a script file")
        return self


class Project(Strict):
    id: Identifier
    name: str = Field(min_length=1)
    description: str = ""
    accessibility: Literal["private", "protected", "public"] = "private"
    # 0 = prearchive, 4 = auto-archive, 5 = auto-archive overwriting; XNAT itself accepts any
    # integer (docs/xnat-api.md §9), so anything else is refused here.
    prearchive_code: Literal[0, 4, 5] = 0
    owners: list[XnatUsername] = []
    members: list[XnatUsername] = []
    collaborators: list[XnatUsername] = []
    anonymization: AnonScript | None = None
    wrappers: list[str] = []  # container-service wrapper names enabled for this project (§13)


SyncType = Literal["include", "exclude", "all", "none"]


class SyncLink(Strict):
    """An Xsync link: relay project -> central project (docs/xnat-api.md §16.3)."""

    project: Identifier  # the project on the relay
    central_project: Identifier  # the project on the central XNAT it is pushed to
    project_name: str | None = None  # the relay project's name; default: its id
    # Relays archive what they receive so that Xsync (which sends archived sessions) picks it up.
    prearchive_code: Literal[0, 4, 5] = 4
    frequency: Literal["hourly", "daily", "weekly", "monthly", "on demand"] = "hourly"
    new_only: bool = True  # False re-sends and replaces central sessions on every change (§16.3)
    identifiers: Literal["use_local", "use_custom"] = "use_local"
    custom_identifiers: str = ""  # label generator bean for use_custom, e.g. dateTimeLabelGenerator
    anonymize: bool = False
    notification_emails: list[Email] = []  # default: the study's admin e-mail
    retry_days: int = Field(default=3, ge=0, le=365)
    project_resources: SyncType = "none"
    subject_resources: SyncType = "none"
    subject_assessors: SyncType = "none"
    imaging_sessions: SyncType = "all"

    @model_validator(mode="after")
    def _custom_needs_generator(self) -> SyncLink:
        if self.identifiers == "use_custom" and not self.custom_identifiers:
            raise ValueError("identifiers: use_custom needs custom_identifiers")
        return self


class XsyncPreferences(Strict):
    """Xsync site preferences on a relay (docs/xnat-api.md §16.2)."""

    token_refresh_interval: XsyncInterval = "10 hours"  # noqa: S105  # an interval
    retry_interval: XsyncInterval = "2 hours"
    retry_count: int = Field(default=2, ge=0, le=100)
    # syncMaxUncompressedZipFileSize: split large transfers (-1 = never; large resources then
    # fail, §16.2). The unit is taken to be bytes [UNVERIFIED on a live pair].
    max_zip_size: int = Field(default=1073741824, ge=-1)


class SitePolicy(Strict):
    """XNAT site preferences the study sets (siteConfig keys, docs/xnat-api.md §7)."""

    require_login: bool = True  # requireLogin
    user_registration: bool = False  # userRegistration
    project_access_requests: bool = False  # par
    non_admin_project_creation: bool = False  # uiAllowNonAdminProjectCreation
    restrict_user_list_to_admins: bool = True  # restrictUserListAccessToAdmins
    session_timeout: Interval = "15 minutes"  # sessionTimeout
    # aliasTokenTimeout: Xsync credentials (alias tokens) expire after this.
    alias_token_timeout: Interval = "2 days"  # noqa: S105  # an interval
    prearchive_idle_minutes: int = Field(default=5, ge=1, le=1440)  # sessionXmlRebuilderInterval
    dicom_receiver_enabled: bool = True  # enableDicomReceiver
    max_failed_logins: int = Field(default=20, ge=1, le=1000)  # maxFailedLogins
    # Any other siteConfig key, posted as given (native JSON types).
    extra: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.]*$")], str | int | bool] = {}


class XnatUser(Strict):
    """An XNAT account. Local accounts get their password from vault_xnat_user_passwords;
    LDAP and OpenID accounts appear when the person first logs in and are referred to by name."""

    username: XnatUsername
    auth: Literal["local", "ldap", "openid"] = "local"
    first_name: str = Field(min_length=1)
    last_name: str = Field(min_length=1)
    email: Email
    roles: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]] = []
    groups: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]] = []
    enabled: bool = True


EventType = Literal[
    "ProjectEvent",
    "SubjectEvent",
    "SessionEvent",
    "SubjectAssessorEvent",
    "ProjectAssetEvent",
    "ImageAssessorEvent",
    "ScanEvent",
    "ScheduledEvent",
]


class EventSubscription(Strict):
    """An event-service subscription launching a container command (docs/xnat-api.md §12)."""

    name: str = Field(min_length=1, max_length=128)
    project: Identifier | None = None  # None: site-wide
    event_type: EventType = "ScanEvent"
    status: str = Field(default="CREATED", pattern=r"^[A-Z_]+$")
    command: str = Field(min_length=1)  # the command's name (from fleet_container_service)
    wrapper: str = Field(min_length=1)
    payload_filter: str = ""
    act_as_event_user: bool = False
    active: bool = True


class ContainerService(Strict):
    """Container service backend and commands (docs/xnat-api.md §13)."""

    name: str = "Local Docker"
    backend: Literal["docker", "swarm", "kubernetes"] = "docker"
    host: str = Field(default="unix:///var/run/docker.sock", pattern=r"^(unix|tcp|https?)://\S+$")
    path_translation_xnat_prefix: str = ""
    path_translation_docker_prefix: str = ""
    max_concurrent_finalizing_jobs: int = Field(default=2, ge=1, le=64)
    commands: list[InventoryFile] = []  # command JSON files (each with its wrappers, "xnat")
    site_wrappers: list[str] = []  # wrapper names enabled site-wide


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Artifact(Strict):
    """A file no distribution ships, pinned by URL and checksum (fetched into the local store)."""

    version: str = Field(min_length=1)
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    sha256: Sha256
    file: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._+-]+$")  # default: URL's name

    @property
    def filename(self) -> str:
        return self.file or self.url.rstrip("/").rsplit("/", 1)[-1]


class JdkArtifact(Artifact):
    major: int = Field(ge=8, le=30)


class Artifacts(Strict):
    xnat_war: Artifact
    tomcat: Artifact
    jdk: JdkArtifact | None = None  # needed when the OS has no package of the Java XNAT needs
    plugins: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")], Artifact] = {}


class XnatSettings(Strict):
    version: Annotated[str, Field(pattern=r"^\d+\.\d+(\.\d+)*$")]
    allow_untested_plugins: bool = False  # accept plugin versions the version matrix does not list


ById = Annotated[str, Field(pattern=r"^/dev/disk/by-id/[^/\s]+$")]


class StorageSettings(Strict):
    """A relay's disks beyond what its hardware profile decides (docs/storage.md). The
    Supermicro's data pool: its RAID level, its disks by id (default: chosen at first boot by
    rule), the second boot SSD, the SSD cache; disks whose old contents may be destroyed."""

    pool_level: Literal["raid6", "raid10"] = "raid6"
    pool_disks: list[ById] = Field(default=[], max_length=16)
    mirror_disk: ById | None = None
    cache: bool = True
    wipe: list[ById] = []

    @model_validator(mode="after")
    def _disks(self) -> StorageSettings:
        if self.pool_disks and len(self.pool_disks) < 4:
            raise ValueError("pool_disks: a RAID6 or RAID10 pool needs at least 4 disks")
        if self.pool_level == "raid10" and len(self.pool_disks) % 2:
            raise ValueError("pool_disks: RAID10 needs an even number of disks")
        if len(set(self.pool_disks)) != len(self.pool_disks):
            raise ValueError("pool_disks: a disk is named twice")
        if self.mirror_disk and self.mirror_disk in self.pool_disks:
            raise ValueError("mirror_disk is also a pool disk")
        return self


class HostConfig(Strict):
    """All ``fleet_*`` variables one host sees (study-wide ones from group_vars/all included)."""

    fleet_study: Study
    fleet_admins: list[Admin] = Field(min_length=1)
    fleet_networks: Networks
    fleet_smtp: Smtp
    fleet_ldap: Ldap | None = None
    fleet_openid: OpenId | None = None
    fleet_ca: CertificateFiles
    fleet_tls: CertificateFiles | None = None  # provided certificate; else the study CA issues one
    fleet_xnat: XnatSettings
    fleet_artifacts: Artifacts
    fleet_plugins: list[str] = []  # names of fleet_artifacts.plugins this host runs
    fleet_hardware: Literal["nuc", "supermicro"]
    fleet_storage: StorageSettings = StorageSettings()
    fleet_fqdn: HostName | None = None  # name in URLs and certificates; default: inventory name
    fleet_ssh_port: Port = 22
    # relays: the network the clone configures (xnat-fleet image clone); default: DHCP on any
    # wired Ethernet port
    fleet_network: HostNetwork = HostNetwork()
    fleet_https_from: list[Network] = []
    # Services this host may open to the whole internet (a network wider than /8, or /32 for
    # IPv6 outside fc00::/7 and fe80::/10, in their sources); default: none (check refuses it).
    fleet_allow_internet: list[InternetService] = []
    # XNAT as code (src/xnat_fleet/xnat): what lives in XNAT's database
    fleet_xnat_url: XnatUrl | None = None  # REST base URL; default https://<fqdn>
    fleet_xnat_service_user: XnatUsername = "xnat_fleet"  # password: vault_xnat_service_password
    fleet_xnat_site: SitePolicy = SitePolicy()
    fleet_anonymization: AnonScript = AnonScript()  # site-wide script; default: off
    fleet_xnat_users: list[XnatUser] = []
    fleet_container_service: ContainerService | None = None
    fleet_event_subscriptions: list[EventSubscription] = []
    # relays
    fleet_site: Site | None = None
    fleet_scanners: list[Scanner] = []
    fleet_dicom_receivers: list[Receiver] = []
    fleet_sync: list[SyncLink] = []
    # Where this relay's Xsync pushes come from as the central host sees them (its NAT address,
    # not necessarily ansible_host); the central host admits them on HTTPS. Required with
    # fleet_sync.
    fleet_push_from: list[Network] = []
    fleet_xsync: XsyncPreferences = XsyncPreferences()
    # central
    fleet_projects: list[Project] = []


class Host(Strict):
    name: str
    kind: Literal["central", "relay"]
    config: HostConfig


class Fleet(Strict):
    """A validated study: one central host and its relays."""

    central: Host
    relays: list[Host]

    @property
    def hosts(self) -> list[Host]:
        return [self.central, *self.relays]

    @property
    def study(self) -> Study:
        return self.central.config.fleet_study


@dataclass(frozen=True, order=True)
class Problem:
    """One validation finding: which host(s), which variable path, what is wrong."""

    hosts: tuple[str, ...]
    variable: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(self.hosts) if self.hosts else "inventory"
        return f"{where}: {self.variable}: {self.message}"

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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# XNAT's site id rule (xnat-facts.md §4: UCL asserts ^[A-Za-z][A-Za-z0-9_]*$); used for every id.
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
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (scanners are admitted by address: give the "
            "scanner's IP, not a host name)"
        ) from None
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


AETitle = Annotated[str, AfterValidator(_ae_title)]
IPAddress = Annotated[str, AfterValidator(_ip_address)]
Network = Annotated[str, AfterValidator(_network)]
Email = Annotated[str, AfterValidator(_email)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
HostName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", max_length=253)
]


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
    internal: list[Network] = []
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


class Receiver(Strict):
    ae_title: AETitle
    port: Port


class Project(Strict):
    id: Identifier
    name: str = Field(min_length=1)


class SyncLink(Strict):
    project: Identifier  # the project on the relay
    central_project: Identifier  # the project on the central XNAT it is pushed to


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
    fleet_fqdn: HostName | None = None  # name in URLs and certificates; default: inventory name
    fleet_ssh_port: Port = 22
    fleet_https_from: list[Network] = []
    # relays
    fleet_site: Site | None = None
    fleet_scanners: list[Scanner] = []
    fleet_dicom_receivers: list[Receiver] = []
    fleet_sync: list[SyncLink] = []
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

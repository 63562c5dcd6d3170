"""The registry of written relay disks: which box got which image and which keys.

One YAML file next to the inventory (``relay-registry.yml``), kept under the study's version
control: one record per written disk (relay, site, image id, version and checksum, XNAT
version, the SSH host keys the clone was given, the TLS certificate's fingerprint, the device's
model and serial when known, time, operator). Records are only ever appended; the newest record
of a relay is the disk that relay runs now, and its host keys are the only ones fleet operations
trust (``known_hosts``). docs/images.md ("Registry") describes the file.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Strict

FILE_NAME = "relay-registry.yml"
FORMAT = 1
HEADER = (
    "# xnat-fleet relay registry: one record per written relay disk, appended by\n"
    "# `xnat-fleet image write`. Keep it under version control with the inventory; fleet\n"
    "# operations trust only the newest record's host keys per relay (docs/images.md).\n"
)
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")


class RegistryError(FleetError):
    """The registry cannot be read, or a record is not valid."""


class HostKey(Strict):
    type: str
    key: str  # base64, as in a known_hosts line

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in _KEY_TYPES:
            raise ValueError(f"one of {', '.join(_KEY_TYPES)}")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("not base64") from None
        return value

    @property
    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint (``SHA256:<base64 without padding>``)."""
        digest = hashlib.sha256(base64.b64decode(self.key)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @classmethod
    def from_public_line(cls, line: str) -> HostKey:
        """From an OpenSSH public key line (``ssh-ed25519 AAAA... comment``)."""
        parts = line.split()
        if len(parts) < 2:
            raise RegistryError(f"not an OpenSSH public key line: {line[:40]!r}")
        return cls(type=parts[0], key=parts[1])


class Device(Strict):
    path: str
    model: str | None = None
    serial: str | None = None


class Record(Strict):
    relay: str = Field(min_length=1)
    site: str | None = None
    image_id: str
    image_version: str
    image_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    xnat_version: str
    ssh_host_keys: list[HostKey] = Field(min_length=1)
    tls_certificate_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    device: Device
    written_at: str
    operator: str

    @field_validator("written_at")
    @classmethod
    def _time(cls, value: str) -> str:
        datetime.fromisoformat(value)
        return value


class Registry(Strict):
    format: int = FORMAT
    disks: list[Record] = Field(default_factory=list)

    def current(self) -> dict[str, Record]:
        """relay -> its newest record (the disk it runs now)."""
        out: dict[str, Record] = {}
        for r in self.disks:  # appended in time order; a later one replaces
            out[r.relay] = r
        return out


def path_for(inventory_dir: Path) -> Path:
    return inventory_dir / FILE_NAME


def load(path: Path) -> Registry:
    """The registry at PATH (empty when the file does not exist)."""
    if not path.exists():
        return Registry()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise RegistryError(f"{path}{where}: YAML syntax error ({exc})") from None
    try:
        registry = Registry.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryError(f"{path}: {problems}") from None
    if registry.format != FORMAT:
        raise RegistryError(f"{path}: format {registry.format}; this version reads {FORMAT}")
    return registry


def append(path: Path, record: Record) -> Registry:
    """Add RECORD to the registry at PATH (written atomically); the new registry."""
    registry = load(path)
    updated = Registry(format=FORMAT, disks=[*registry.disks, record])
    doc = updated.model_dump(mode="json", exclude_none=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return updated


def new_record(
    *,
    relay: str,
    site: str | None,
    manifest: Mapping[str, object],
    image_sha256: str,
    host_keys: Iterable[HostKey],
    device: Device,
    tls_certificate_sha256: str | None = None,
    operator: str | None = None,
) -> Record:
    return Record(
        relay=relay,
        site=site,
        image_id=str(manifest["image_id"]),
        image_version=str(manifest["image_version"]),
        image_sha256=image_sha256,
        xnat_version=str(manifest["xnat_version"]),
        ssh_host_keys=list(host_keys),
        tls_certificate_sha256=tls_certificate_sha256,
        device=device,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        operator=operator or os.environ.get("SUDO_USER") or getpass.getuser(),
    )


def known_hosts(registry: Registry, addresses: Mapping[str, tuple[str, int]]) -> str:
    """OpenSSH known_hosts lines for every registered relay: its newest record's keys under its
    address (``[host]:port`` when the port is not 22) and its inventory name. A relay of the
    inventory without a record gets none (so strict checking refuses it)."""
    lines = []
    for relay, record in sorted(registry.current().items()):
        if relay not in addresses:
            continue
        host, port = addresses[relay]
        names = [host] if host == relay else [host, relay]
        label = ",".join(n if port == 22 else f"[{n}]:{port}" for n in names)
        lines += [f"{label} {k.type} {k.key}" for k in record.ssh_host_keys]
    return "".join(line + "\n" for line in lines)

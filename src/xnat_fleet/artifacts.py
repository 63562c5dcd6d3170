"""The pinned artifact store: XNAT's WAR, its plugins, a Tomcat archive and a JDK archive.

Hosts never download. ``fetch`` downloads each pinned file on a connected machine into the local
store (resuming partial downloads) and keeps it only when its sha256 matches the pin; ``verify``
checks the store. A site without internet copies the files into the store by hand. Roles copy
from the store on the controller.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Artifact, Fleet
from xnat_fleet.model.loader import InventorySource

STORE_ENV = "XNAT_FLEET_ARTIFACT_STORE"
PLACEHOLDER = "0" * 64
CHUNK = 1 << 20


class ArtifactError(FleetError):
    """A pinned artifact is missing, mismatching or unpinned."""


@dataclass(frozen=True)
class Pin:
    """One pinned file: which artifact, its name in the store, where it comes from."""

    key: str  # "xnat_war", "tomcat", "jdk", "plugin:xsync"
    filename: str
    version: str
    url: str
    sha256: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Status:
    pin: Pin
    state: str  # ok | missing | mismatch | placeholder
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def explain(self, store: Path) -> str:
        p = self.pin
        where = store / p.filename
        if self.state == "placeholder":
            return (
                f"{p.key} ({p.filename}): the sha256 in the inventory is a placeholder; pin the "
                "checksum published for this file"
            )
        if self.state == "missing":
            problem = "missing from the store"
        else:
            problem = f"checksum mismatch (found {self.actual})"
        return (
            f"{p.key} ({p.filename}): {problem}; expected sha256 {p.sha256}. Fetch it with "
            f"`xnat-fleet artifacts fetch`, or stage it by hand: copy the file from {p.url} "
            f"to {where}"
        )


def store_dir(source: InventorySource, override: Path | None = None) -> Path:
    """--store, then $XNAT_FLEET_ARTIFACT_STORE, then the inventory's settings, then ~/.cache."""
    if override is not None:
        return override
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    configured = source.settings().get("artifact_store")
    if configured:
        return source.directory / str(configured)
    return Path.home() / ".cache" / "xnat-fleet" / "artifacts"


def pins(fleet: Fleet) -> list[Pin]:
    """Every artifact some host of the fleet needs, once, with the hosts that need it."""
    found: dict[tuple[str, str], tuple[Artifact, list[str]]] = {}

    def need(key: str, artifact: Artifact, host: str) -> None:
        entry = found.setdefault((key, artifact.sha256), (artifact, []))
        entry[1].append(host)

    for host in fleet.hosts:
        a = host.config.fleet_artifacts
        need("xnat_war", a.xnat_war, host.name)
        need("tomcat", a.tomcat, host.name)
        if a.jdk is not None:
            need("jdk", a.jdk, host.name)
        for plugin in host.config.fleet_plugins:
            need(f"plugin:{plugin}", a.plugins[plugin], host.name)
    out = [
        Pin(key, art.filename, art.version, art.url, art.sha256, tuple(hosts))
        for (key, _), (art, hosts) in found.items()
    ]
    names: dict[str, str] = {}
    for p in out:
        if names.setdefault(p.filename, p.sha256) != p.sha256:
            raise ArtifactError(f"{p.filename}: two pins with different checksums share this name")
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check(store: Path, pin: Pin) -> Status:
    if pin.sha256 == PLACEHOLDER:
        return Status(pin, "placeholder")
    path = store / pin.filename
    if not path.is_file():
        return Status(pin, "missing")
    actual = sha256_of(path)
    return Status(pin, "ok" if actual == pin.sha256 else "mismatch", actual)


def verify(store: Path, wanted: list[Pin]) -> list[Status]:
    return [check(store, p) for p in wanted]


def require(store: Path, wanted: list[Pin]) -> None:
    """Raise one error listing every artifact that is not in the store as pinned."""
    bad = [s for s in verify(store, wanted) if not s.ok]
    if bad:
        raise ArtifactError("\n".join(s.explain(store) for s in bad))


Progress = Callable[[Pin, int, int | None], None]  # pin, bytes so far, total (None if unknown)


def fetch(
    store: Path, pin: Pin, on_progress: Progress | None = None, timeout: float = 60
) -> Status:
    """Download one pin into the store, resuming ``<file>.part``; keep it only if it verifies."""
    status = check(store, pin)
    if status.state in ("ok", "placeholder"):
        return status
    store.mkdir(parents=True, exist_ok=True)
    part = store / f"{pin.filename}.part"
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(pin.url)  # noqa: S310  # the URL is a pinned http(s) URL
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if offset and response.status != 206:  # the server ignored the range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with part.open("ab" if offset else "wb") as out:
                done = offset
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    if on_progress is not None:
                        on_progress(pin, done, total)
    except (urllib.error.URLError, OSError) as exc:
        raise ArtifactError(
            f"{pin.key} ({pin.filename}): download from {pin.url} failed: {exc}; run fetch again "
            f"to resume, or stage the file by hand in {store}"
        ) from None
    actual = sha256_of(part)
    if actual != pin.sha256:
        part.unlink()
        return Status(pin, "mismatch", actual)
    part.rename(store / pin.filename)
    return Status(pin, "ok", actual)

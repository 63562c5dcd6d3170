"""Packaging a built disk image for shipping: block map, zstd, qcow2, checksums, manifest.

Files written next to the raw image ``<name>.raw``:

- ``<name>.bmap``: the block map (bmaptool's format), made from the raw image before anything
  is compressed, so it describes the sparse original;
- ``<name>.raw.zst``: the raw image compressed with zstd (a writer decompresses on the fly);
- ``<name>.qcow2`` when asked for (VM users);
- ``<name>.manifest.json``: what the image is and what made it (see :func:`manifest`);
- ``SHA256SUMS``: the sha256 of every file above, in ``sha256sum -c`` format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_fleet.errors import FleetError
from xnat_fleet.image import bmap as bmap_lib
from xnat_fleet.image import files

MANIFEST_FORMAT = 1


class PackageError(FleetError):
    """A packaging tool failed or is missing."""


@dataclass
class Packaged:
    raw: Path
    bmap: Path
    zst: Path
    manifest: Path
    sums: Path
    qcow2: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _run(*argv: str) -> None:
    files.run(*argv, error=PackageError)


def manifest(
    *,
    image_id: str,
    image_version: str,
    profile: str,
    study: str,
    xnat_version: str,
    revision: str,
    packages_digest: str,
    inputs: dict[str, str],
    block_map: bmap_lib.Bmap,
) -> dict[str, Any]:
    """The manifest: identity, provenance and size of one golden image."""
    return {
        "format": MANIFEST_FORMAT,
        "image_id": image_id,
        "image_version": image_version,
        "profile": profile,
        "study": study,
        "xnat_version": xnat_version,
        "git_revision": revision,
        "packages_sha256": packages_digest,
        "inputs": dict(sorted(inputs.items())),
        "size_bytes": block_map.image_size,
        "mapped_bytes": block_map.mapped_bytes,
    }


def package(raw: Path, meta: dict[str, Any], qcow2: bool = False) -> Packaged:
    """Write the shipping files of ``raw`` (see the module docstring); ``meta`` is the manifest
    without the file checksums, which are added here."""
    # Names from the raw image's name without ".raw" (a version may hold dots: no with_suffix).
    base = raw.name.removesuffix(".raw")

    def sibling(extension: str) -> Path:
        return raw.with_name(base + extension)

    block_map = bmap_lib.create(raw)
    bmap_path = sibling(".bmap")
    bmap_lib.write(block_map, bmap_path)
    zst = raw.with_name(raw.name + ".zst")
    zst.unlink(missing_ok=True)
    _run("zstd", "-q", "-T0", "-3", "-o", str(zst), str(raw))
    out = Packaged(raw, bmap_path, zst, sibling(".manifest.json"), raw.parent / "SHA256SUMS")
    if qcow2:
        out.qcow2 = sibling(".qcow2")
        out.qcow2.unlink(missing_ok=True)
        _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out.qcow2))
    shipped = [p for p in (raw, bmap_path, zst, out.qcow2) if p is not None]
    out.files = {p.name: sha256_file(p) for p in shipped}
    doc = {**meta, "files": out.files}
    out.manifest.write_text(json.dumps(doc, indent=2) + "\n")
    out.files[out.manifest.name] = sha256_file(out.manifest)
    out.sums.write_text(
        "".join(f"{digest}  {name}\n" for name, digest in sorted(out.files.items()))
    )
    return out

"""The base root of an image: mmdebstrap from Debian's packages, cached by what goes into it.

The cache key is the sha256 of the suite, architecture, components, mirrors, the package list
and this stage's own options: a build with none of them changed reuses the tarball
(``~/.cache/xnat-fleet/image-base/base-<key>.tar``, or ``$XNAT_FLEET_IMAGE_CACHE``), so only
the first build on a machine pays for the download and the package installation. Packages come
through the machine's apt cache (``xnat_fleet.aptcache``) when one runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from xnat_fleet.errors import FleetError
from xnat_fleet.image.recipe import Recipe

CACHE_ENV = "XNAT_FLEET_IMAGE_CACHE"
VARIANT = "minbase"
STAGE_VERSION = 1  # bump when the mmdebstrap options below change


class BaseError(FleetError):
    """mmdebstrap failed or is missing."""


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xnat-fleet" / "image-base"


def sources(recipe: Recipe) -> list[str]:
    comps = " ".join(recipe.components)
    s = recipe.suite
    return [
        f"deb {recipe.mirror} {s} {comps}",
        f"deb {recipe.mirror} {s}-updates {comps}",
        f"deb {recipe.security_mirror} {s}-security {comps}",
    ]


def key(recipe: Recipe) -> str:
    material = {
        "stage": STAGE_VERSION,
        "variant": VARIANT,
        "suite": recipe.suite,
        "architecture": recipe.architecture,
        "sources": sources(recipe),
        "packages": recipe.packages.all(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def build(
    recipe: Recipe,
    apt_proxy: str | None = None,
    directory: Path | None = None,
    log: Callable[[str], None] = lambda _l: None,
) -> tuple[Path, bool]:
    """The cached base tarball for ``recipe`` (made now if missing) and whether it was reused."""
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / f"base-{key(recipe)}.tar"
    if tarball.is_file():
        return tarball, True
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise BaseError("mmdebstrap is not installed (make bootstrap installs it)")
    partial = tarball.with_suffix(".partial")
    argv = [
        tool,
        f"--variant={VARIANT}",
        f"--architectures={recipe.architecture}",
        f"--components={','.join(recipe.components)}",
        f"--include={','.join(recipe.packages.all())}",
        # the machine id is made by the image's first boot, never by the build
        '--customize-hook=rm -f "$1/etc/machine-id"; echo uninitialized > "$1/etc/machine-id"',
    ]
    if apt_proxy:
        argv.append(f'--aptopt=Acquire::http::Proxy "{apt_proxy}"')
    argv += ["--format=tar", recipe.suite, str(partial), *sources(recipe)]
    proc = subprocess.Popen(  # noqa: S603 (argv, no shell)
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        log(line.rstrip())
        tail = [*tail[-30:], line.rstrip()]
    if proc.wait() != 0:
        partial.unlink(missing_ok=True)
        raise BaseError("mmdebstrap failed:\n" + "\n".join(tail))
    partial.replace(tarball)
    return tarball, False


def unpack(tarball: Path, tree: Path, progress: Callable[[int], None] = lambda _n: None) -> Path:
    """The tarball as a root tree at ``tree`` (owners, modes and devices kept: run as root),
    read as a stream; ``progress`` gets the bytes of the tarball read since its last call."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    with tarball.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        last = 0
        for member in tar:
            tar.extract(member, tree, filter="fully_trusted", numeric_owner=True)
            pos = raw.tell()
            progress(pos - last)
            last = pos
    return tree

"""Sealing: make a provisioned root tree generic, offline, from the recipe's ``seal`` list.

Plain Python over a fixed list rather than pyinfra operations: the tree is a directory on the
build machine, not a host, so there is nothing to connect to, and a list of file operations
checked inside the tree is simpler to read, to test and to audit than a deploy. Every path is
resolved inside the tree: a symlink in the tree that points elsewhere (``/etc/os-release ->
../usr/lib/os-release``, or an absolute one) is followed within the tree, never on the build
machine.

After the list, :func:`stamp_os_release` writes ``IMAGE_ID``, ``IMAGE_VERSION`` and the XNAT
version into os-release (the fields systemd and ``hostnamectl`` show).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2

from xnat_fleet.errors import FleetError
from xnat_fleet.image.assemble import templates
from xnat_fleet.image.recipe import SealStep

XNAT_VERSION_KEY = "XNAT_FLEET_XNAT_VERSION"


class SealError(FleetError):
    """A seal step that cannot be applied (a path that leaves the tree, an unreadable file)."""


@dataclass(frozen=True)
class Applied:
    step: SealStep
    paths: list[str]  # paths in the tree (``/etc/...``) the step changed


def inside(root: Path, path: str, follow_last: bool = True) -> Path:
    """``path`` (absolute, as seen from inside the tree) as a build-machine path under ``root``,
    symlinks resolved against the tree. Refuses a path that would leave it."""
    root = root.resolve()
    parts = [p for p in Path(path).parts if p != "/"]
    current = root
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / name
        if candidate.is_symlink() and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise SealError(f"{path}: too many symlinks")
            target = str(candidate.readlink())
            if target.startswith("/"):
                current = root
            parts = [p for p in Path(target).parts if p != "/"] + parts
            continue
        current = candidate
    if current != root and root not in current.parents:
        raise SealError(f"{path}: leaves the image tree")
    return current


def _matches(root: Path, pattern: str) -> list[Path]:
    base = str(root.resolve())
    # glob.glob, not Path.glob: include_hidden, and patterns that start at the tree's root
    found = glob.glob(base + pattern, recursive=True, include_hidden=True)  # noqa: PTH207
    out = []
    for hit in sorted(found, key=len, reverse=True):  # deepest first: files before their dirs
        parent = os.path.realpath(Path(hit).parent)
        if parent != base and not parent.startswith(base + os.sep):
            rel = "/" + os.path.relpath(hit, base)
            raise SealError(f"{pattern}: {rel} is reached through a symlink that leaves the tree")
        out.append(Path(hit))
    return out


def _tree_path(root: Path, p: Path) -> str:
    return "/" + str(p.relative_to(root.resolve()))


def apply(root: Path, steps: list[SealStep]) -> list[Applied]:
    """Apply ``steps`` to the tree at ``root`` in order; what each one changed."""
    done = []
    for step in steps:
        changed: list[str] = []
        if step.action in ("remove", "truncate"):
            for p in _matches(root, step.path):
                if step.action == "remove":
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    changed.append(_tree_path(root, p))
                elif p.is_file() and not p.is_symlink() and p.stat().st_size > 0:
                    with p.open("r+b") as f:
                        f.truncate(0)
                    changed.append(_tree_path(root, p))
        elif step.action == "preset":
            p = inside(root, step.path, follow_last=False)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(
                "# Written by xnat-fleet's sealing: the units this image enabled, and no other\n"
                "# (systemd's first boot runs preset-all; see relay_images/ and docs/images.md).\n"
                + "\n".join(preset_lines(root))
                + "\n"
            )
            p.chmod(0o644)
            changed.append(_tree_path(root, p))
        else:
            p = inside(root, step.path, follow_last=False)
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                p.unlink()
            if step.action == "write":
                p.write_text(_content(step))
                p.chmod(int(step.mode, 8))
            else:
                assert step.content is not None  # the recipe's validator guarantees it
                p.symlink_to(step.content)
            changed.append(_tree_path(root, p))
        done.append(Applied(step, changed))
    return done


def _content(step: SealStep) -> str:
    """A write step's text: its content, or its template (templates/) rendered."""
    if step.template is None:
        assert step.content is not None  # the recipe's validator guarantees one of them
        return step.content
    try:
        return templates().get_template(step.template).render(path=step.path)
    except jinja2.TemplateNotFound:
        raise SealError(f"{step.path}: template {step.template} is not in templates/") from None


_INSTANCE = re.compile(r"(?P<template>[^@/]+@)(?P<instance>[^/]+)(?P<suffix>\.[a-z]+)")


def preset_lines(root: Path) -> list[str]:
    """``enable`` for every unit the tree enables in /etc (its *.wants and *.requires links), an
    instance as ``enable name@.service instance``, then ``disable *``."""
    etc = inside(root, "/etc/systemd/system")
    units: set[str] = set()
    for pattern in ("*.wants", "*.requires"):
        for d in sorted(etc.glob(pattern)):
            units.update(link.name for link in d.iterdir() if link.is_symlink())
    lines = []
    for unit in sorted(units):
        m = _INSTANCE.fullmatch(unit)
        if m:
            lines.append(f"enable {m['template']}{m['suffix']} {m['instance']}")
        else:
            lines.append(f"enable {unit}")
    return [*lines, "disable *"]


def stamp_os_release(root: Path, image_id: str, image_version: str, xnat_version: str) -> Path:
    """Write the image's identity into the tree's os-release (the file /etc/os-release names)."""
    path = inside(root, "/etc/os-release")
    if not path.is_file():
        raise SealError("/etc/os-release: missing in the image tree")
    keys = {"IMAGE_ID": image_id, "IMAGE_VERSION": image_version, XNAT_VERSION_KEY: xnat_version}
    kept = [line for line in path.read_text().splitlines() if line.split("=", 1)[0] not in keys]
    kept += [f'{k}="{v}"' for k, v in keys.items()]
    path.write_text("\n".join(kept) + "\n")
    return path


def read_os_release(root: Path) -> dict[str, str]:
    path = inside(root, "/etc/os-release")
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"')
    return out

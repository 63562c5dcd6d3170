"""What the image stages share: the tools they run and sparse files (data extents, copies that
keep holes as holes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from xnat_fleet.errors import FleetError

_CHUNK = 4 << 20


def require(name: str, error: type[FleetError]) -> str:
    """The path of the tool ``name`` (also looked for in /usr/sbin and /sbin), else ``error``."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise error(f"{name} is not installed (make bootstrap installs it)")
    return path


def run(
    *argv: str,
    error: type[FleetError],
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the tool ``argv[0]`` (found by :func:`require`) with the rest of ``argv``; text out.
    With ``check``, a non-zero exit raises ``error`` with the tool's name and its message."""
    proc = subprocess.run(  # noqa: S603 (argv, no shell)
        [require(argv[0], error), *argv[1:]],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise error(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def data_extents(path: Path, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(offset, length) of each data region of ``path`` within ``start``..``end``, from
    SEEK_DATA / SEEK_HOLE (everything else reads as zeros)."""
    end = path.stat().st_size if end is None else end
    extents: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = start
        while offset < end:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            extents.append((data, hole - data))
            offset = hole
    finally:
        os.close(fd)
    return extents


def copy_extents(
    src: Path, dest: Path, start: int = 0, length: int | None = None, offset: int = 0
) -> int:
    """The data of ``src`` from ``start`` (``length`` bytes, default: to its end) into the
    existing file ``dest`` at ``offset``; only data extents are written. Bytes written."""
    end = None if length is None else start + length
    written = 0
    with src.open("rb") as s, dest.open("r+b") as d:
        for data, size in data_extents(src, start, end):
            s.seek(data)
            d.seek(offset + data - start)
            remaining = size
            while remaining:
                chunk = s.read(min(_CHUNK, remaining))
                d.write(chunk)
                remaining -= len(chunk)
                written += len(chunk)
    return written


def extract_range(image: Path, start: int, length: int, dest: Path) -> None:
    """Bytes ``start``..``start+length`` of ``image`` as the sparse file ``dest``."""
    with dest.open("wb") as f:
        f.truncate(length)
    copy_extents(image, dest, start, length)

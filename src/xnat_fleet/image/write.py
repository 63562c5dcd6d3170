"""Writing a disk image to a disk (or a file standing in for one) by its block map, and reading
it back.

``write`` refuses a target that is in use (mounted, swap, held by md/LVM/dm, a file attached
to a loop device), one smaller than the image, and one that carries any signature (a partition
table or a file system, found by ``wipefs``) unless ``force`` is given; it then wipes every
signature (``wipefs --all``, which also finds a backup GPT at the end of a reused disk) and
zeroes the target's first and last MiB, so no stale partition table is left where firmware or
the kernel looks for one. The image is a raw file or its ``.zst`` (decompressed as a
stream). Only the bmap's mapped ranges are written, in writes of up to ``CHUNK`` bytes
aligned to the map's block size; each range read from the image is checked
against the map's checksum while it is written (a corrupt image stops the write). The target is
then synced and its cached pages dropped, and ``verify`` reads every mapped range back from the
target and compares it with the map.

Holes are never written: on a reused disk they keep old bytes, which is what bmaptool does too;
the image's file systems do not read them (docs/images.md, "Write and verify").
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_fleet.errors import FleetError
from xnat_fleet.image import bmap as bmap_lib
from xnat_fleet.image import files

CHUNK = 8 << 20
EDGE = 1 << 20  # zeroed at both ends of the target before writing
Progress = Callable[[int], None]  # bytes done since the last call


class WriteError(FleetError):
    """The target was refused, or writing or reading it failed."""


@dataclass
class Target:
    path: Path
    block: bool  # a block device (else a regular file)
    size: int
    existed: bool


@dataclass
class WriteResult:
    bytes_written: int
    write_seconds: float
    verify_seconds: float
    bad_ranges: list[bmap_lib.BlockRange]
    wiped: list[str]  # the signatures removed

    @property
    def throughput(self) -> float:
        """Bytes per second of write and read-back together."""
        total = self.write_seconds + self.verify_seconds
        return self.bytes_written / total if total else 0.0


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return files.run(*argv, error=WriteError, check=False)


def inspect(path: Path) -> Target:
    """What PATH is: a block device, an existing file, or a file to be created."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise WriteError(f"{path}: its directory does not exist") from None
        return Target(path, False, 0, False)
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
        return Target(path, True, size, True)
    if stat.S_ISREG(st.st_mode):
        return Target(path, False, st.st_size, True)
    raise WriteError(f"{path}: neither a block device nor a regular file")


def in_use(target: Target) -> list[str]:
    """Why TARGET must not be written now (empty: it may)."""
    if not target.existed:
        return []
    if not target.block:
        proc = _run("losetup", "--json", "--list", "--output", "NAME,BACK-FILE")
        loops = (
            json.loads(proc.stdout or "{}").get("loopdevices", []) if proc.returncode == 0 else []
        )
        resolved = str(target.path.resolve())
        return [
            f"attached to {d['name']}" for d in loops if d.get("back-file", "").strip() == resolved
        ]
    proc = _run("lsblk", "--json", "--output", "PATH,MOUNTPOINTS,TYPE", str(target.path))
    if proc.returncode != 0:
        raise WriteError(f"{target.path}: lsblk failed: {proc.stderr.strip()}")
    reasons: list[str] = []

    def walk(node: dict[str, Any], top: bool) -> None:
        points = [p for p in node.get("mountpoints") or [] if p]
        for p in points:
            reasons.append(f"{node.get('path')} is mounted on {p}")
        if not top and node.get("type") not in ("part",):
            reasons.append(f"{node.get('path')} ({node.get('type')}) is built on it")
        for child in node.get("children") or []:
            walk(child, False)

    for dev in json.loads(proc.stdout).get("blockdevices", []):
        walk(dev, True)
    return reasons


def signatures(target: Target) -> list[str]:
    """The signatures wipefs finds on TARGET (type and offset), e.g. ``gpt at 0x200``."""
    if not target.existed or target.size == 0:
        return []
    proc = _run("wipefs", "--no-act", "--json", str(target.path))
    if proc.returncode != 0:
        raise WriteError(f"{target.path}: wipefs failed: {proc.stderr.strip()}")
    found = json.loads(proc.stdout or "{}").get("signatures", [])
    return [f"{s.get('type')} at {s.get('offset')}" for s in found]


def check(target: Target, block_map: bmap_lib.Bmap, force: bool) -> list[str]:
    """Refuse TARGET for an image of this map (WriteError); the signatures that will be wiped."""
    busy = in_use(target)
    if busy:
        raise WriteError(f"{target.path} is in use: " + "; ".join(busy))
    if target.existed and target.size < block_map.image_size:
        raise WriteError(
            f"{target.path} holds {target.size} bytes, the image needs {block_map.image_size}"
        )
    found = signatures(target)
    if found and not force:
        raise WriteError(
            f"{target.path} holds data ({', '.join(found)}); it is not overwritten without --force"
        )
    return found


def wipe(target: Target) -> None:
    """Remove every signature and zero the first and last MiB (an old backup GPT)."""
    if target.existed and target.size:
        proc = _run("wipefs", "--all", "--force", "--quiet", str(target.path))
        if proc.returncode != 0:
            raise WriteError(f"{target.path}: wipefs failed: {proc.stderr.strip()}")
    fd = os.open(target.path, os.O_WRONLY)
    try:
        zeros = bytes(min(EDGE, target.size))
        os.pwrite(fd, zeros, 0)
        if target.size > EDGE:
            os.pwrite(fd, zeros, target.size - len(zeros))
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_cache(fd: int) -> None:
    """Forget the cached pages, so that a read-back reads the medium."""
    os.fsync(fd)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


_DEPTH = 4  # chunks in flight between the pipeline's stages (4 x CHUNK each)
_END = None


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ITEM unless the pipeline stopped (the writer failed): never blocks for good."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read_zst(
    image: Path, block_map: bmap_lib.Bmap, out: queue.Queue[Any], stop: threading.Event
) -> None:
    """Reader stage for a ``.zst`` image: decompressed as a stream (``zstd -dc``); the holes
    between mapped ranges are read and dropped (zeros decompress fast), the ranges passed on."""
    tool = files.require("zstd", WriteError)
    proc = subprocess.Popen(  # noqa: S603 (argv, no shell)
        [tool, "-dcq", str(image)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    pos = 0
    try:
        for i, r in enumerate(block_map.ranges):
            start, length = r.byte_span(block_map.block_size, block_map.image_size)
            while pos < start:  # a hole
                skipped = proc.stdout.read(min(CHUNK, start - pos))
                if not skipped:
                    raise WriteError(f"{image}: ends at byte {pos}, before the bmap's ranges do")
                pos += len(skipped)
            while pos < start + length and not stop.is_set():
                n = min(CHUNK, start + length - pos)
                chunk = proc.stdout.read(n)
                if len(chunk) != n:
                    raise WriteError(f"{image}: ends at byte {pos + len(chunk)}, inside a range")
                if not _put(out, (i, pos, chunk), stop):
                    return
                pos += n
        _put(out, _END, stop)
    except BaseException as exc:
        _put(out, exc, stop)
    finally:
        proc.kill()
        proc.wait()


def _read_chunks(
    image: Path, block_map: bmap_lib.Bmap, out: queue.Queue[Any], stop: threading.Event
) -> None:
    """Reader stage: every mapped range of IMAGE in chunks, as (range index, offset, bytes)."""
    if image.name.endswith(".zst"):
        _read_zst(image, block_map, out, stop)
        return
    try:
        fd = os.open(image, os.O_RDONLY)
        try:
            for i, r in enumerate(block_map.ranges):
                start, length = r.byte_span(block_map.block_size, block_map.image_size)
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
                pos = start
                while pos < start + length and not stop.is_set():
                    n = min(CHUNK, start + length - pos)
                    chunk = os.pread(fd, n, pos)
                    if len(chunk) != n:
                        raise WriteError(f"{image}: short read at byte {pos}")
                    if not _put(out, (i, pos, chunk), stop):
                        return
                    pos += n
        finally:
            os.close(fd)
        _put(out, _END, stop)
    except BaseException as exc:  # handed to the writer, which raises it
        _put(out, exc, stop)


def _hash_chunks(
    image: Path,
    block_map: bmap_lib.Bmap,
    inbox: queue.Queue[Any],
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Hash stage: each range's sha256 against the map; chunks passed on unchanged."""
    current, digest = -1, hashlib.sha256()

    def close(index: int) -> None:
        r = block_map.ranges[index]
        if digest.hexdigest() != r.sha256:
            raise WriteError(
                f"{image}: blocks {r.first}-{r.last} differ from the bmap's checksum "
                "(a corrupt image or the wrong bmap); the target is incomplete"
            )

    try:
        while True:
            item = inbox.get()
            if item is _END or isinstance(item, BaseException):
                if item is _END and current >= 0:
                    close(current)
                _put(out, item, stop)
                return
            index, _pos, chunk = item
            if index != current:
                if current >= 0:
                    close(current)
                current, digest = index, hashlib.sha256()
            digest.update(chunk)
            if not _put(out, item, stop):
                return
    except BaseException as exc:
        _put(out, exc, stop)


def write_ranges(
    image: Path, block_map: bmap_lib.Bmap, target: Target, progress: Progress = lambda _n: None
) -> int:
    """Copy the mapped ranges of IMAGE to TARGET; bytes written. Reading, checking the image
    against the map and writing run as a pipeline of three threads (file I/O and hashlib
    release the GIL), so the write costs about as long as its slowest stage."""
    if not image.name.endswith(".zst") and image.stat().st_size != block_map.image_size:
        raise WriteError(
            f"{image}: {image.stat().st_size} bytes, its bmap says {block_map.image_size}"
        )
    flags = os.O_WRONLY | (0 if target.existed else os.O_CREAT | os.O_EXCL)
    out = os.open(target.path, flags, 0o644)
    written = 0
    stop = threading.Event()
    read_q: queue.Queue[Any] = queue.Queue(maxsize=_DEPTH)
    hashed_q: queue.Queue[Any] = queue.Queue(maxsize=_DEPTH)
    workers = [
        threading.Thread(target=_read_chunks, args=(image, block_map, read_q, stop), daemon=True),
        threading.Thread(
            target=_hash_chunks, args=(image, block_map, read_q, hashed_q, stop), daemon=True
        ),
    ]
    try:
        if not target.block and target.size < block_map.image_size:
            os.ftruncate(out, block_map.image_size)  # a new file disk: sparse, the image's size
        for w in workers:
            w.start()
        while True:
            item = hashed_q.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            _index, pos, chunk = item
            done = 0
            while done < len(chunk):
                done += os.pwrite(out, memoryview(chunk)[done:], pos + done)
            written += len(chunk)
            progress(len(chunk))
        _drop_cache(out)
    finally:
        stop.set()  # the stages see it within 0.1 s, also when their queue is full
        for w in workers:
            if w.is_alive():
                w.join(timeout=5)
        os.close(out)
    return written


def verify(
    block_map: bmap_lib.Bmap, target: Path, progress: Progress = lambda _n: None
) -> list[bmap_lib.BlockRange]:
    """The mapped ranges whose bytes on TARGET differ from the map, read from the medium (its
    cached pages dropped first) by a reader thread while this one hashes."""
    fd = os.open(target, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    inbox: queue.Queue[Any] = queue.Queue(maxsize=_DEPTH)
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_chunks, args=(target, block_map, inbox, stop), daemon=True
    )
    reader.start()
    seen: dict[int, str] = {}  # range index -> sha256 of what the target holds (whole ranges)
    current, digest, got = -1, hashlib.sha256(), 0
    try:
        while True:
            item = inbox.get()
            if item is _END or isinstance(item, BaseException):
                break  # a short read (a target that ends early): the rest counts as differing
            index, _pos, chunk = item
            if index != current:
                current, digest, got = index, hashlib.sha256(), 0
            digest.update(chunk)
            got += len(chunk)
            r = block_map.ranges[index]
            if got == r.byte_span(block_map.block_size, block_map.image_size)[1]:
                seen[index] = digest.hexdigest()
            progress(len(chunk))
    finally:
        stop.set()
        reader.join(timeout=5)
    return [r for i, r in enumerate(block_map.ranges) if seen.get(i) != r.sha256]


def write(
    image: Path,
    block_map: bmap_lib.Bmap,
    device: Path,
    *,
    force: bool = False,
    on_write: Progress = lambda _n: None,
    on_verify: Progress = lambda _n: None,
) -> WriteResult:
    """Check, wipe, write the mapped ranges, sync, read back (module docstring)."""
    target = inspect(device)
    found = check(target, block_map, force)
    if target.existed:
        wipe(target)
    started = time.monotonic()
    written = write_ranges(image, block_map, target, on_write)
    write_seconds = time.monotonic() - started
    started = time.monotonic()
    bad = verify(block_map, device, on_verify)
    return WriteResult(written, write_seconds, time.monotonic() - started, bad, found)


def find_bmap(image: Path) -> Path:
    """The bmap next to IMAGE (a raw image or its ``.raw.zst``): ``<name>.bmap`` (ours) or
    ``<name>.raw.bmap`` (bmaptool's habit)."""
    raw_name = image.name.removesuffix(".zst")
    for candidate in (
        image.with_name(raw_name.removesuffix(".raw") + ".bmap"),
        image.with_name(raw_name + ".bmap"),
    ):
        if candidate.is_file():
            return candidate
    raise WriteError(f"{image}: no bmap next to it (give --bmap)")


def find_image(path: Path) -> Path:
    """A raw image, or the single ``*.raw`` of a published image directory."""
    if path.is_dir():
        raws = sorted(path.glob("*.raw"))
        if len(raws) != 1:
            raise WriteError(f"{path}: expected one *.raw in it, found {len(raws)}")
        return raws[0]
    if path.suffix == ".qcow2":
        raise WriteError(f"{path}: write the raw image or its .raw.zst, not the qcow2")
    return path

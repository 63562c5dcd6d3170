"""Writing a disk image to a disk (or a file standing in for one) by its block map, and reading
it back.

``write`` refuses a target that is in use (mounted, swap, held by md/LVM/dm, a file attached
to a loop device), one smaller than the image, and one that carries any signature (a partition
table or a file system, found by ``wipefs``) unless ``force`` is given; it then wipes every
signature (``wipefs --all``, which also finds a backup GPT at the end of a reused disk) and
zeroes the target's first and last MiB, so no stale partition table is left where firmware or
the kernel looks for one. The image is a raw file or its ``.zst`` (decompressed as a
stream). Only the bmap's mapped ranges are written, in writes of up to ``CHUNK`` bytes
aligned to the map's block size. Every ``SYNC_WINDOW`` bytes the target is synced, and that
window is read back from the target and compared with the map's checksums while the next one
is written: the read-back of a disk costs little more than its last window. Each byte is hashed
once, as read back from the target; a range that differs there is read again from the image, and
if the image itself differs from the map (a corrupt image, or the wrong map) the write stops and
says so. A ``.zst`` image, a stream that cannot be read twice, is checked as it is decompressed.

The target is written with direct I/O (``O_DIRECT``) where its file system or driver takes it:
no copy into the page cache, no dirty pages, so the synced window is on the medium and none of
it is cached. Reads (image and read-back) go through the page cache with readahead asked for
ahead of the reader, which measured faster than direct reads on this project's machines; before
a window is read back its cached pages are dropped, so the read-back reads the medium
(docs/images.md, "Write and verify").

Holes are never written: on a reused disk they keep old bytes, which is what bmaptool does too;
the image's file systems do not read them (docs/images.md, "Write and verify").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import mmap
import os
import queue
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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
    write_seconds: float  # until the last byte was written and synced
    verify_seconds: float  # the read-back after that (it runs alongside the write until then)
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


ALIGN = 4096  # direct I/O's alignment of offsets, lengths, buffers (every sector size divides)
SYNC_WINDOW = 128 << 20  # written bytes between two syncs; each synced window is then read back
_POOL = 6  # buffers of CHUNK bytes per stage that owns them
_END = object()


class _Pipe:
    """Threads joined by bounded queues, and one stop flag: every wait gives up within 0.1 s of
    a stop (a stage failed or the caller left), so no thread is left blocked."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        """A stage failed: the pipe stops, and its owner raises EXC."""
        if self.error is None:
            self.error = exc
        self.stop.set()

    def spawn(self, fn: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        """The next item, or _END once the pipe stopped."""
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


def _pool() -> queue.Queue[mmap.mmap]:
    """Page-aligned buffers (anonymous maps), as direct I/O needs them."""
    free: queue.Queue[mmap.mmap] = queue.Queue()
    for _ in range(_POOL):
        free.put(mmap.mmap(-1, CHUNK))
    return free


Chunk = tuple[int, int, int]  # range index, offset, length


class _Medium:
    """A file or device, with a direct-I/O descriptor (``O_DIRECT``: past the page cache) where
    its file system or driver takes it, and a buffered one. Writes go direct whenever offset and
    length are multiples of ALIGN (no copy into the cache, no dirty pages to flush). Reads of a
    block device go direct too (each read comes from the device). Reads of a regular file go
    through the cache with readahead asked for ahead of the reader (``prefetch``), after the
    span's cached pages were dropped (``forget``): on the machines measured that read faster
    than direct reads of a file do (docs/images.md, "Write and verify")."""

    def __init__(self, path: Path, flags: int) -> None:
        self.fd = os.open(path, flags, 0o644)
        self.block = stat.S_ISBLK(os.fstat(self.fd).st_mode)
        self.direct: int | None = None
        if self.block or flags & (os.O_WRONLY | os.O_RDWR):
            with contextlib.suppress(OSError):
                self.direct = os.open(path, (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_DIRECT)

    def _buffered(self) -> None:
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def _io(self, op: Callable[[int, memoryview, int], int], buf: memoryview, pos: int,
            direct_ok: bool) -> int:  # fmt: skip
        done = 0
        while done < len(buf):
            aligned = (pos + done) % ALIGN == 0 and (len(buf) - done) % ALIGN == 0
            fd = self.direct if direct_ok and aligned and self.direct is not None else self.fd
            try:
                n = op(fd, buf[done:], pos + done)
            except OSError as exc:
                if fd == self.fd or exc.errno != errno.EINVAL:
                    raise
                self._buffered()  # the file system takes no direct I/O after all
                continue
            if n == 0:
                break
            done += n
        return done

    def read_into(self, buf: memoryview, pos: int) -> int:
        """Bytes read into BUF from POS (fewer at the end of the medium)."""
        return self._io(lambda fd, b, p: os.preadv(fd, [b], p), buf, pos, self.block)

    def write(self, buf: memoryview, pos: int) -> None:
        if self._io(lambda fd, b, p: os.pwritev(fd, [b], p), buf, pos, True) != len(buf):
            raise WriteError(f"short write at byte {pos}")

    def prefetch(self, chunk: Chunk) -> None:
        """Ask for readahead of CHUNK (not for direct reads: they bypass the cache)."""
        if hasattr(os, "posix_fadvise") and not (self.block and self.direct is not None):
            os.posix_fadvise(self.fd, chunk[1], chunk[2], os.POSIX_FADV_WILLNEED)

    def forget(self, start: int, length: int) -> None:
        """Drop the cached pages of a span, so that reading it reads the medium."""
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        self._buffered()
        os.close(self.fd)


AHEAD = 2  # chunks of readahead asked for ahead of a reader


def _ahead(medium: _Medium, chunks: list[Chunk], k: int) -> None:
    """Before chunk K is read: readahead for the chunks up to K + AHEAD (each asked once)."""
    for j in range(k if k == 0 else k + AHEAD, min(k + AHEAD, len(chunks) - 1) + 1):
        medium.prefetch(chunks[j])


def _chunks(block_map: bmap_lib.Bmap) -> list[Chunk]:
    """Every mapped range cut into pieces of at most CHUNK bytes, in order."""
    out: list[Chunk] = []
    for i, r in enumerate(block_map.ranges):
        start, length = r.byte_span(block_map.block_size, block_map.image_size)
        for pos in range(start, start + length, CHUNK):
            out.append((i, pos, min(CHUNK, start + length - pos)))
    return out


def _read_image(
    image: Path, block_map: bmap_lib.Bmap, free: queue.Queue[mmap.mmap], out: queue.Queue[Any],
    pipe: _Pipe,
) -> None:  # fmt: skip
    """Reader stage: the image's mapped chunks as (chunk, buffer); a ``.zst`` image is
    decompressed as a stream (``zstd -dc``), its holes read and dropped (zeros decompress fast)."""
    try:
        if image.name.endswith(".zst"):
            _read_zst(image, block_map, free, out, pipe)
            return
        medium = _Medium(image, os.O_RDONLY)
        try:
            chunks = _chunks(block_map)
            for k, (i, pos, n) in enumerate(chunks):
                buf = pipe.get(free)
                if buf is _END:
                    return
                _ahead(medium, chunks, k)
                if medium.read_into(memoryview(buf)[:n], pos) != n:
                    raise WriteError(f"{image}: short read at byte {pos}")
                if not pipe.put(out, ((i, pos, n), buf)):
                    return
        finally:
            medium.close()
        pipe.put(out, _END)
    except BaseException as exc:  # handed down the pipe, raised by the writer
        pipe.put(out, exc)


def _read_zst(
    image: Path, block_map: bmap_lib.Bmap, free: queue.Queue[mmap.mmap], out: queue.Queue[Any],
    pipe: _Pipe,
) -> None:  # fmt: skip
    tool = files.require("zstd", WriteError)
    proc = subprocess.Popen(  # noqa: S603 (argv, no shell)
        [tool, "-dcq", str(image)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    stream = cast(io.BufferedReader, proc.stdout)

    def fill(view: memoryview) -> int:
        got = 0
        while got < len(view):
            n = stream.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    pos = 0
    scratch = memoryview(bytearray(CHUNK))
    try:
        for i, start, n in _chunks(block_map):
            while pos < start:  # a hole
                skipped = fill(scratch[: min(CHUNK, start - pos)])
                if not skipped:
                    raise WriteError(f"{image}: ends at byte {pos}, before the bmap's ranges do")
                pos += skipped
            buf = pipe.get(free)
            if buf is _END:
                return
            got = fill(memoryview(buf)[:n])
            if got != n:
                raise WriteError(f"{image}: ends at byte {pos + got}, inside a range")
            if not pipe.put(out, ((i, start, n), buf)):
                return
            pos += n
        pipe.put(out, _END)
    finally:
        proc.kill()
        proc.wait()


class _RangeHash:
    """sha256 of whole ranges fed chunk by chunk, in order; ``feed`` returns the digest of a
    range once its last chunk is in."""

    def __init__(self, block_map: bmap_lib.Bmap) -> None:
        self.block_map = block_map
        self.index, self.digest, self.got = -1, hashlib.sha256(), 0

    def feed(self, chunk: Chunk, data: memoryview) -> str | None:
        index, _pos, n = chunk
        if index != self.index:
            self.index, self.digest, self.got = index, hashlib.sha256(), 0
        self.digest.update(data)
        self.got += n
        r = self.block_map.ranges[index]
        if self.got == r.byte_span(self.block_map.block_size, self.block_map.image_size)[1]:
            return self.digest.hexdigest()
        return None


def _corrupt(image: Path, r: bmap_lib.BlockRange) -> WriteError:
    return WriteError(
        f"{image}: blocks {r.first}-{r.last} differ from the bmap's checksum "
        "(a corrupt image or the wrong bmap); the target is incomplete"
    )


def _check_image(
    image: Path, block_map: bmap_lib.Bmap, inbox: queue.Queue[Any], out: queue.Queue[Any],
    pipe: _Pipe,
) -> None:  # fmt: skip
    """Hash stage of a ``.zst`` image (a stream: it cannot be read again to tell a corrupt
    image from a bad target afterwards): each range against the map, chunks passed on."""
    sums = _RangeHash(block_map)
    try:
        while True:
            item = pipe.get(inbox)
            if item is _END or isinstance(item, BaseException):
                pipe.put(out, item)
                return
            chunk, buf = item
            digest = sums.feed(chunk, memoryview(buf)[: chunk[2]])
            r = block_map.ranges[chunk[0]]
            if digest is not None and digest != r.sha256:
                raise _corrupt(image, r)
            if not pipe.put(out, item):
                return
    except BaseException as exc:
        pipe.put(out, exc)


def _image_range_differs(image: Path, block_map: bmap_lib.Bmap, index: int) -> bool:
    """Whether range INDEX of a raw IMAGE itself differs from the map (read again, only after
    the target's copy of it differed: a corrupt image, not a bad target)."""
    r = block_map.ranges[index]
    start, length = r.byte_span(block_map.block_size, block_map.image_size)
    digest = hashlib.sha256()
    with image.open("rb") as f:
        f.seek(start)
        while length > 0:
            data = f.read(min(CHUNK, length))
            if not data:
                return True
            digest.update(data)
            length -= len(data)
    return digest.hexdigest() != r.sha256


def _read_back(
    medium: _Medium, free: queue.Queue[mmap.mmap], inbox: queue.Queue[Any],
    out: queue.Queue[Any], pipe: _Pipe,
) -> None:  # fmt: skip
    """Read-back stage: batches of chunks (each batch already synced) read from the target, past
    its page cache. After a short read (a target that ends early) or a read error, the batches
    that follow are taken and not read: what was not read counts as differing."""
    ended = False
    try:
        while True:
            batch = pipe.get(inbox)
            if batch is _END:
                break
            if ended or not batch:
                continue
            first, last = batch[0], batch[-1]
            medium.forget(first[1], last[1] + last[2] - first[1])
            for k, chunk in enumerate(batch):
                buf = pipe.get(free)
                if buf is _END:
                    return
                _ahead(medium, batch, k)
                try:
                    got = medium.read_into(memoryview(buf)[: chunk[2]], chunk[1])
                except OSError:
                    got = -1
                if got != chunk[2]:
                    free.put(buf)
                    ended = True
                    break
                if not pipe.put(out, (chunk, buf)):
                    return
    finally:
        pipe.put(out, _END)


def _compare(
    block_map: bmap_lib.Bmap, free: queue.Queue[mmap.mmap], inbox: queue.Queue[Any],
    seen: dict[int, str], progress: Progress, on_bad: Callable[[int], None], pipe: _Pipe,
) -> None:  # fmt: skip
    """Compare stage: the sha256 of each range read back, into SEEN (range index -> digest);
    ON_BAD is called with the index of a range that differs (it may raise: the pipe fails)."""
    sums = _RangeHash(block_map)
    try:
        while True:
            item = pipe.get(inbox)
            if item is _END:
                return
            chunk, buf = item
            digest = sums.feed(chunk, memoryview(buf)[: chunk[2]])
            free.put(buf)
            if digest is not None:
                seen[chunk[0]] = digest
                if digest != block_map.ranges[chunk[0]].sha256:
                    on_bad(chunk[0])
            progress(chunk[2])
    except BaseException as exc:
        pipe.fail(exc)


def _verifier(
    block_map: bmap_lib.Bmap, medium: _Medium, progress: Progress, pipe: _Pipe,
    on_bad: Callable[[int], None] = lambda _i: None,
) -> tuple[queue.Queue[Any], dict[int, str]]:  # fmt: skip
    """Start the read-back and compare stages on MEDIUM; feed the returned queue batches of
    synced chunks, then _END; the dict fills with each range's digest on the target."""
    batches: queue.Queue[Any] = queue.Queue(maxsize=_POOL)
    read: queue.Queue[Any] = queue.Queue(maxsize=_POOL)
    free = _pool()
    seen: dict[int, str] = {}
    pipe.spawn(_read_back, medium, free, batches, read, pipe)
    pipe.spawn(_compare, block_map, free, read, seen, progress, on_bad, pipe)
    return batches, seen


def _differing(block_map: bmap_lib.Bmap, seen: dict[int, str]) -> list[bmap_lib.BlockRange]:
    return [r for i, r in enumerate(block_map.ranges) if seen.get(i) != r.sha256]


def _join(pipe: _Pipe) -> None:
    """Wait for the verifier's stages to finish their work (they end on _END)."""
    for thread in pipe.threads:
        thread.join()


@dataclass
class _Written:
    bytes_written: int
    write_seconds: float
    bad_ranges: list[bmap_lib.BlockRange]


def _write_and_read_back(
    image: Path,
    block_map: bmap_lib.Bmap,
    target: Target,
    on_write: Progress,
    on_verify: Progress,
) -> _Written:
    """Copy the mapped ranges of IMAGE to TARGET and read each synced window back while the
    next is written. Stages (threads; file I/O and hashlib release the GIL): read the image
    (for a ``.zst``, also check it against the map), write (this thread; a sync every
    SYNC_WINDOW bytes), read the synced window back, compare it with the map. Each byte is
    hashed once, on the target: a range that differs there is checked again in the raw image,
    and a corrupt image stops the write, named."""
    if not image.name.endswith(".zst") and image.stat().st_size != block_map.image_size:
        raise WriteError(
            f"{image}: {image.stat().st_size} bytes, its bmap says {block_map.image_size}"
        )
    flags = os.O_RDWR | (0 if target.existed else os.O_CREAT | os.O_EXCL)
    medium = _Medium(target.path, flags)
    pipe = _Pipe()
    started = time.monotonic()

    def on_bad(index: int) -> None:
        if not image.name.endswith(".zst") and _image_range_differs(image, block_map, index):
            raise _corrupt(image, block_map.ranges[index])

    try:
        if not target.block and target.size < block_map.image_size:
            os.ftruncate(medium.fd, block_map.image_size)  # a new file disk: sparse, full size
        free = _pool()
        read: queue.Queue[Any] = queue.Queue(maxsize=_POOL)
        pipe.spawn(_read_image, image, block_map, free, read, pipe)
        if image.name.endswith(".zst"):
            checked: queue.Queue[Any] = queue.Queue(maxsize=_POOL)
            pipe.spawn(_check_image, image, block_map, read, checked, pipe)
            read = checked
        batches, seen = _verifier(block_map, medium, on_verify, pipe, on_bad)
        written, batch, unsynced = 0, [], 0
        while True:
            item = pipe.get(read)
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            chunk, buf = item
            medium.write(memoryview(buf)[: chunk[2]], chunk[1])
            free.put(buf)
            written += chunk[2]
            on_write(chunk[2])
            batch.append(chunk)
            unsynced += chunk[2]
            if unsynced >= SYNC_WINDOW:
                os.fdatasync(medium.fd)
                pipe.put(batches, batch)
                batch, unsynced = [], 0
        if pipe.error is None:
            os.fsync(medium.fd)
        write_seconds = time.monotonic() - started
        pipe.put(batches, batch)
        pipe.put(batches, _END)
        _join(pipe)
        if pipe.error is not None:
            raise pipe.error
        return _Written(written, write_seconds, _differing(block_map, seen))
    finally:
        pipe.close()
        medium.close()


def verify(
    block_map: bmap_lib.Bmap, target: Path, progress: Progress = lambda _n: None
) -> list[bmap_lib.BlockRange]:
    """The mapped ranges whose bytes on TARGET differ from the map, read from the medium (past
    the page cache) by a reader thread while another hashes."""
    medium = _Medium(target, os.O_RDONLY)
    pipe = _Pipe()
    try:
        batches, seen = _verifier(block_map, medium, progress, pipe)
        everything = _chunks(block_map)
        for start in range(0, len(everything), SYNC_WINDOW // CHUNK):
            pipe.put(batches, everything[start : start + SYNC_WINDOW // CHUNK])
        pipe.put(batches, _END)
        _join(pipe)
        if pipe.error is not None:
            raise pipe.error
        return _differing(block_map, seen)
    finally:
        pipe.close()
        medium.close()


def write(
    image: Path,
    block_map: bmap_lib.Bmap,
    device: Path,
    *,
    force: bool = False,
    on_write: Progress = lambda _n: None,
    on_verify: Progress = lambda _n: None,
) -> WriteResult:
    """Check, wipe, write the mapped ranges and read them back (module docstring)."""
    target = inspect(device)
    found = check(target, block_map, force)
    if target.existed:
        wipe(target)
    started = time.monotonic()
    done = _write_and_read_back(image, block_map, target, on_write, on_verify)
    total = time.monotonic() - started
    return WriteResult(
        done.bytes_written, done.write_seconds, total - done.write_seconds, done.bad_ranges, found
    )


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

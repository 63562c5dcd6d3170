"""Block maps in bmaptool's XML format (version 2.0), made from a sparse image file.

A block map lists the ranges of an image that hold data (everything else reads as zeros), each
with its sha256, so that a writer copies only those ranges and a verifier reads them back and
compares. The file is the one Debian's bmap-tools reads and writes (``bmaptool create`` /
``bmaptool copy``): ``ImageSize``, ``BlockSize``, ``BlocksCount``, ``MappedBlocksCount``,
``ChecksumType``, ``BmapFileChecksum`` (the sha256 of the file with that field set to zeros) and
a ``BlockMap`` of ``<Range chksum="...">first-last</Range>`` in block numbers. docs/images.md
has the details this module relies on.

The data ranges come from the file system's own map of the file (``SEEK_DATA``/``SEEK_HOLE``),
so the image must be a sparse file made without writing zeros into its holes (the assembler
does that); a range of written zeros is mapped, never lost.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from xnat_fleet.image import files

BMAP_VERSION = "2.0"
BLOCK_SIZE = 4096
CHECKSUM = "sha256"
_ZERO_SUM = "0" * 64
_CHUNK = 1 << 20


class BmapError(Exception):
    """A block map that cannot be made, read or trusted."""


@dataclass(frozen=True)
class BlockRange:
    """Blocks ``first`` to ``last`` (inclusive) and the sha256 of their bytes."""

    first: int
    last: int
    sha256: str

    def byte_span(self, block_size: int, image_size: int) -> tuple[int, int]:
        """Offset and length in bytes (the last block of an image may be short)."""
        start = self.first * block_size
        end = min((self.last + 1) * block_size, image_size)
        return start, end - start


@dataclass
class Bmap:
    image_size: int
    block_size: int = BLOCK_SIZE
    ranges: list[BlockRange] = field(default_factory=list)

    @property
    def blocks_count(self) -> int:
        return (self.image_size + self.block_size - 1) // self.block_size

    @property
    def mapped_blocks(self) -> int:
        return sum(r.last - r.first + 1 for r in self.ranges)

    @property
    def mapped_bytes(self) -> int:
        return sum(r.byte_span(self.block_size, self.image_size)[1] for r in self.ranges)


def _block_ranges(extents: list[tuple[int, int]], block_size: int) -> list[tuple[int, int]]:
    """Data extents widened to whole blocks and merged where they touch."""
    out: list[tuple[int, int]] = []
    for offset, length in extents:
        first = offset // block_size
        last = (offset + length - 1) // block_size
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


# A range is at most this many blocks (16 MiB of 4 KiB): a clone's map (derive) hashes again
# only the ranges its changes touch, and a read-back names a bad range to within 16 MiB.
MAX_RANGE_BLOCKS = 4096


def _split(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for first, last in ranges:
        while last - first + 1 > MAX_RANGE_BLOCKS:
            out.append((first, first + MAX_RANGE_BLOCKS - 1))
            first += MAX_RANGE_BLOCKS
        out.append((first, last))
    return out


def _sha256_span(f: BinaryIO, start: int, length: int) -> str:
    digest = hashlib.sha256()
    f.seek(start)
    remaining = length
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise BmapError(f"image ended before offset {start + length}")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def create(image: Path, block_size: int = BLOCK_SIZE) -> Bmap:
    """The block map of ``image`` (its data ranges and their checksums)."""
    size = image.stat().st_size
    if size == 0:
        raise BmapError(f"{image}: an empty file has no block map")
    bmap = Bmap(image_size=size, block_size=block_size)
    with image.open("rb") as f:
        for first, last in _split(_block_ranges(files.data_extents(image), block_size)):
            probe = BlockRange(first, last, "")
            start, length = probe.byte_span(block_size, size)
            bmap.ranges.append(BlockRange(first, last, _sha256_span(f, start, length)))
    return bmap


def derive(base: Bmap, changed: list[tuple[int, int]], image: Path) -> Bmap:
    """The block map of ``image``: ``base`` (the map of the image it was made from) with the
    byte extents ``changed`` since. A base range that no change touches keeps its checksum, a
    touched one is hashed again from ``image`` (same bounds), and a change outside every base
    range becomes a new range."""
    bs = base.block_size
    touched = _block_ranges(sorted(changed), bs)
    out = Bmap(image_size=base.image_size, block_size=bs)
    spans: list[tuple[int, int, str]] = []
    for r in base.ranges:
        hit = any(first <= r.last and last >= r.first for first, last in touched)
        spans.append((r.first, r.last, "" if hit else r.sha256))
    for first, last in touched:  # the parts of a change that no base range covers
        start = first
        for r in base.ranges:
            if r.last < start or r.first > last:
                continue
            if r.first > start:
                spans.append((start, r.first - 1, ""))
            start = r.last + 1
        if start <= last:
            spans.append((start, last, ""))
    with image.open("rb") as f:
        for first, last, digest in sorted(spans):
            if not digest:
                start_byte, length = BlockRange(first, last, "").byte_span(bs, base.image_size)
                digest = _sha256_span(f, start_byte, length)
            out.ranges.append(BlockRange(first, last, digest))
    return out


def render(bmap: Bmap) -> str:
    """The XML text of ``bmap``, its own checksum filled in."""
    percent = 100.0 * bmap.mapped_bytes / bmap.image_size
    lines = [
        '<?xml version="1.0" ?>',
        "<!-- Block map of a disk image (bmaptool's format): the ranges that hold data,",
        "     each with its sha256. Written by xnat-fleet. -->",
        f'<bmap version="{BMAP_VERSION}">',
        f"    <ImageSize> {bmap.image_size} </ImageSize>",
        f"    <BlockSize> {bmap.block_size} </BlockSize>",
        f"    <BlocksCount> {bmap.blocks_count} </BlocksCount>",
        f"    <!-- Mapped: {bmap.mapped_bytes} bytes, {percent:.1f}% -->",
        f"    <MappedBlocksCount> {bmap.mapped_blocks} </MappedBlocksCount>",
        f"    <ChecksumType> {CHECKSUM} </ChecksumType>",
        f"    <BmapFileChecksum> {_ZERO_SUM} </BmapFileChecksum>",
        "    <BlockMap>",
    ]
    for r in bmap.ranges:
        span = f"{r.first}" if r.first == r.last else f"{r.first}-{r.last}"
        lines.append(f'        <Range chksum="{r.sha256}"> {span} </Range>')
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    own = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(f"<BmapFileChecksum> {_ZERO_SUM} ", f"<BmapFileChecksum> {own} ", 1)


def write(bmap: Bmap, path: Path) -> None:
    path.write_text(render(bmap))


def _int(root: ET.Element, tag: str, source: str) -> int:
    node = root.find(tag)
    if node is None or node.text is None:
        raise BmapError(f"{source}: no <{tag}>")
    try:
        return int(node.text.strip())
    except ValueError as exc:
        raise BmapError(f"{source}: <{tag}> is not a number: {node.text.strip()!r}") from exc


def parse(text: str, source: str = "bmap") -> Bmap:
    """A block map from its XML (ours or bmaptool's), its own checksum verified."""
    # A bmap may come with an image from anywhere: no DTD, so no entity expansion.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise BmapError(f"{source}: a bmap has no DTD or entities")
    try:
        root = ET.fromstring(text)  # noqa: S314 (DTDs refused above)
    except ET.ParseError as exc:
        raise BmapError(f"{source}: not XML: {exc}") from exc
    major = (root.get("version") or "0").split(".")[0]
    if root.tag != "bmap" or major != "2":
        raise BmapError(f"{source}: not a version 2 bmap (got {root.tag} {root.get('version')})")
    kind = (root.findtext("ChecksumType") or "").strip()
    if kind != CHECKSUM:
        raise BmapError(f"{source}: checksum type {kind!r}; only {CHECKSUM} is supported")
    own = (root.findtext("BmapFileChecksum") or "").strip()
    zeroed = text.replace(own, _ZERO_SUM, 1)
    if hashlib.sha256(zeroed.encode()).hexdigest() != own:
        raise BmapError(f"{source}: the file's own checksum does not match (edited or damaged)")
    bmap = Bmap(
        image_size=_int(root, "ImageSize", source), block_size=_int(root, "BlockSize", source)
    )
    for node in root.iter("Range"):
        span = (node.text or "").strip()
        first_s, _, last_s = span.partition("-")
        try:
            first, last = int(first_s), int(last_s or first_s)
        except ValueError as exc:
            raise BmapError(f"{source}: bad range {span!r}") from exc
        checksum = node.get("chksum") or ""
        if len(checksum) != 64:
            raise BmapError(f"{source}: range {span} has no sha256")
        bmap.ranges.append(BlockRange(first, last, checksum))
    if bmap.mapped_blocks != _int(root, "MappedBlocksCount", source):
        raise BmapError(f"{source}: MappedBlocksCount disagrees with the ranges")
    return bmap


def read(path: Path) -> Bmap:
    return parse(path.read_text(), str(path))

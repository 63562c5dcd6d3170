"""Block maps: ours from a sparse file, read back by bmaptool (Debian's bmap-tools), and theirs
read by us; a verify finds a single flipped byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from xnat_fleet.image import bmap
from xnat_fleet.image import write as write_lib

MiB = 1 << 20


def _sparse_image(path: Path) -> dict[int, bytes]:
    """A 64 MiB sparse file with data at a few offsets (one range not block aligned)."""
    pieces = {0: b"\xeb" * 4096, 5 * MiB + 100: b"data" * 3000, 63 * MiB: b"\x55" * MiB}
    with path.open("wb") as f:
        f.truncate(64 * MiB)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    return pieces


def _bmaptool() -> str:
    tool = shutil.which("bmaptool")
    if tool is None:
        pytest.fail("bmaptool (Debian's bmap-tools) is missing: run make bootstrap")
    return tool


def test_our_map_lists_only_the_data_and_checks_itself(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _sparse_image(image)
    made = bmap.create(image)
    assert made.image_size == 64 * MiB
    assert made.blocks_count == 64 * MiB // 4096
    # The data: block 0, the blocks 5 MiB+100 .. +12000 touch, the last MiB.
    assert [(r.first, r.last) for r in made.ranges] == [
        (0, 0),
        (5 * MiB // 4096, (5 * MiB + 100 + 12000 - 1) // 4096),
        (63 * MiB // 4096, 64 * MiB // 4096 - 1),
    ]
    path = tmp_path / "disk.bmap"
    bmap.write(made, path)
    again = bmap.read(path)
    assert again.ranges == made.ranges
    assert again.mapped_bytes == made.mapped_bytes < 2 * MiB
    # An edited map is refused.
    path.write_text(path.read_text().replace("<BlockSize> 4096", "<BlockSize> 4097"))
    with pytest.raises(bmap.BmapError, match="own checksum"):
        bmap.read(path)


def test_bmaptool_copies_with_our_map(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    pieces = _sparse_image(image)
    bmap.write(bmap.create(image), tmp_path / "disk.bmap")
    target = tmp_path / "target.raw"
    target.write_bytes(b"\xff" * (64 * MiB))  # not zeros: only mapped ranges are written
    proc = subprocess.run(
        [_bmaptool(), "copy", "--bmap", str(tmp_path / "disk.bmap"), str(image), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with target.open("rb") as f:
        for offset, data in pieces.items():
            f.seek(offset)
            assert f.read(len(data)) == data
    assert write_lib.verify(bmap.read(tmp_path / "disk.bmap"), target) == []


def test_we_read_bmaptools_map_and_catch_a_flipped_byte(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _sparse_image(image)
    theirs = tmp_path / "theirs.bmap"
    subprocess.run([_bmaptool(), "create", "-o", str(theirs), str(image)], check=True)
    parsed = bmap.read(theirs)
    assert [(r.first, r.last, r.sha256) for r in parsed.ranges] == [
        (r.first, r.last, r.sha256) for r in bmap.create(image).ranges
    ]
    copy = tmp_path / "copy.raw"
    shutil.copyfile(image, copy)
    assert write_lib.verify(parsed, copy) == []
    with copy.open("r+b") as f:
        f.seek(5 * MiB + 4242)
        byte = f.read(1)
        f.seek(5 * MiB + 4242)
        f.write(bytes([byte[0] ^ 1]))
    bad = write_lib.verify(parsed, copy)
    assert [(r.first, r.last) for r in bad] == [(parsed.ranges[1].first, parsed.ranges[1].last)]

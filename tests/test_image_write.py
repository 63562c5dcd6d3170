"""`image write` / `image verify`: only mapped ranges written, read back from the medium; refusals
that change nothing; old signatures (a backup GPT at the end of a reused disk) wiped; a flipped
byte found by range, a flip in a hole no false alarm; bmaptool's maps accepted. Block-device
cases use a loop device (root, as in CI)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from xnat_fleet.cli import cli
from xnat_fleet.image import bmap, files
from xnat_fleet.image import write as write_lib

MiB = 1 << 20
SFDISK = (
    "label: gpt\nstart=2048, size=20480, type=uefi, name=esp\nstart=22528, type=linux, name=root\n"
)


def _image(path: Path, size: int = 48 * MiB) -> tuple[Path, bmap.Bmap]:
    """A sparse disk image with a GPT and three data regions, and its bmap."""
    with path.open("wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "--quiet", str(path)], input=SFDISK, text=True, check=True)
    with path.open("r+b") as f:
        for offset, length in ((2 * MiB, 300_000), (20 * MiB, 3 * MiB + 17), (40 * MiB, 4096)):
            f.seek(offset)
            f.write(os.urandom(length))
    made = bmap.create(path)
    bmap.write(made, path.with_name(path.name.removesuffix(".raw") + ".bmap"))
    return path, made


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _old_disk(path: Path, size: int) -> Path:
    """A used disk: a GPT of its own size, so its backup header sits in its last sector."""
    with path.open("wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "--quiet", str(path)], input="label: gpt\n,\n", text=True, check=True)
    return path


def test_a_new_file_gets_only_the_mapped_ranges(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    target = tmp_path / "disk.img"
    result = write_lib.write(image, made, target)
    assert result.bytes_written == made.mapped_bytes and result.bad_ranges == []
    assert target.stat().st_size == made.image_size
    # Holes stay holes: the target holds data only where the map has ranges.
    mapped = sum(length for _offset, length in files.data_extents(target))
    assert mapped == made.mapped_bytes
    assert _sha(target) == _sha(image)  # holes read as zeros, as in the image


def test_refusals_change_nothing(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    small = _old_disk(tmp_path / "small.img", 32 * MiB)
    before = _sha(small)
    with pytest.raises(
        write_lib.WriteError, match=r"holds 33554432 bytes, the image needs 50331648"
    ):
        write_lib.write(image, made, small, force=True)
    used = _old_disk(tmp_path / "used.img", 96 * MiB)
    used_before = _sha(used)
    with pytest.raises(write_lib.WriteError, match=r"holds data \(.*gpt.*\).*--force"):
        write_lib.write(image, made, used)
    assert _sha(small) == before and _sha(used) == used_before


def test_force_wipes_the_old_backup_gpt_and_writes(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    used = _old_disk(tmp_path / "used.img", 96 * MiB)
    with used.open("rb") as f:
        f.seek(used.stat().st_size - 512)
        assert f.read(8) == b"EFI PART"  # the old disk's backup GPT header
    result = write_lib.write(image, made, used, force=True)
    assert result.bad_ranges == [] and any("gpt" in s for s in result.wiped)
    with used.open("rb") as f:
        f.seek(used.stat().st_size - 512)
        assert f.read(512) == bytes(512)  # gone: nothing stale where firmware looks
    dump = subprocess.run(["sfdisk", "--dump", str(used)], capture_output=True, text=True)
    assert 'name="esp"' in dump.stdout and 'name="root"' in dump.stdout


def test_verify_names_a_flipped_range_and_ignores_holes(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    target = tmp_path / "disk.img"
    write_lib.write(image, made, target)
    hit = made.ranges[1]
    with target.open("r+b") as f:
        f.seek(hit.first * made.block_size + 5)
        byte = f.read(1)
        f.seek(hit.first * made.block_size + 5)
        f.write(bytes([byte[0] ^ 1]))
        f.seek(30 * MiB)  # a hole of the image
        f.write(b"junk")
    assert write_lib.verify(made, target) == [hit]
    runner = CliRunner()
    out = runner.invoke(cli, ["image", "verify", str(image), "--device", str(target)])
    assert out.exit_code == 1
    assert f"blocks {hit.first}-{hit.last}" in out.output and "1 range(s) differ" in out.output


def test_a_corrupt_image_stops_the_write(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    with image.open("r+b") as f:
        f.seek(20 * MiB + 100)
        f.write(b"X")
    with pytest.raises(write_lib.WriteError, match=r"differ from the bmap's checksum"):
        write_lib.write(image, made, tmp_path / "disk.img")


def test_a_bmap_made_by_bmaptool_is_accepted(tmp_path: Path) -> None:
    image, _ours = _image(tmp_path / "relay.raw")
    theirs = tmp_path / "relay.raw.bmap"
    subprocess.run(["bmaptool", "create", "-o", str(theirs), str(image)], check=True)
    (tmp_path / "relay.bmap").unlink()  # find_bmap must find bmaptool's name on its own
    assert write_lib.find_bmap(image) == theirs
    runner = CliRunner()
    target = tmp_path / "disk.img"
    out = runner.invoke(cli, ["image", "write", str(image), "--device", str(target), "--json"])
    assert out.exit_code == 0, out.output
    assert '"verified": true' in out.output
    assert _sha(target) == _sha(image)


@contextlib.contextmanager
def _loop(backing: Path) -> Iterator[Path]:
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a loop device needs root (CI is root)")


@needs_root
def test_a_block_device_is_written_and_a_mounted_one_refused(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    backing = tmp_path / "backing.img"
    with backing.open("wb") as f:
        f.truncate(64 * MiB)
    with _loop(backing) as dev:
        # The backing file of a loop device is in use.
        with pytest.raises(write_lib.WriteError, match=rf"attached to {dev}"):
            write_lib.write(image, made, backing)
        result = write_lib.write(image, made, dev)
        assert result.bad_ranges == [] and result.bytes_written == made.mapped_bytes
        assert write_lib.verify(made, dev) == []
    mount = tmp_path / "mnt"
    mount.mkdir()
    fs = tmp_path / "fs.img"
    with fs.open("wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", str(fs)], check=True)
    with _loop(fs) as dev:
        subprocess.run(["mount", str(dev), str(mount)], check=True)
        try:
            with pytest.raises(write_lib.WriteError, match=rf"{dev} is mounted on {mount}"):
                write_lib.write(image, made, dev, force=True)
        finally:
            subprocess.run(["umount", str(mount)], check=True)


def test_the_shipped_zst_is_written_as_a_stream(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    subprocess.run(["zstd", "-q", "-o", str(tmp_path / "relay.raw.zst"), str(image)], check=True)
    image.unlink()  # only the .zst and the bmap are shipped
    zst = tmp_path / "relay.raw.zst"
    assert write_lib.find_bmap(zst) == tmp_path / "relay.bmap"
    target = tmp_path / "disk.img"
    result = write_lib.write(zst, made, target)
    assert result.bad_ranges == [] and result.bytes_written == made.mapped_bytes
    # A truncated stream ends inside a range: refused, named.
    cut = tmp_path / "cut.raw.zst"
    cut.write_bytes(zst.read_bytes()[: zst.stat().st_size // 2])
    with pytest.raises(write_lib.WriteError, match=r"ends at byte \d+"):
        write_lib.write(cut, made, tmp_path / "disk2.img")


def test_verify_of_a_target_that_ends_early_reports_the_missing_ranges(tmp_path: Path) -> None:
    image, made = _image(tmp_path / "relay.raw")
    target = tmp_path / "disk.img"
    write_lib.write(image, made, target)
    with target.open("r+b") as f:
        f.truncate(30 * MiB)  # the last data region (at 40 MiB) is gone
    bad = write_lib.verify(made, target)
    assert bad and all(r.first * made.block_size >= 30 * MiB for r in bad)
    assert bad[-1] == made.ranges[-1]


def test_a_bad_write_is_a_bad_target_range_not_a_corrupt_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back finds what the medium holds: a byte that the target got wrong is reported
    as that range of the target (the image, read again, is right), and the write goes on."""
    image, made = _image(tmp_path / "relay.raw")
    hit = made.ranges[1]
    hit_at = hit.first * made.block_size
    real_write = write_lib._Medium.write

    def flaky(self: write_lib._Medium, buf: memoryview, pos: int) -> None:
        if pos <= hit_at < pos + len(buf):
            data = bytearray(buf)
            data[hit_at - pos] ^= 0xFF
            buf = memoryview(data)
        real_write(self, buf, pos)

    monkeypatch.setattr(write_lib._Medium, "write", flaky)
    result = write_lib.write(image, made, tmp_path / "disk.img")
    assert result.bad_ranges == [hit]
    assert result.bytes_written == made.mapped_bytes


def test_a_target_that_refuses_direct_io_is_written_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems open with O_DIRECT and then refuse the I/O (EINVAL; a FUSE export can):
    the writer goes on with buffered writes, and still reads every range back."""
    image, made = _image(tmp_path / "relay.raw")
    real_pwritev = os.pwritev
    refused: list[int] = []

    def no_direct(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", no_direct)
    target = tmp_path / "disk.img"
    result = write_lib.write(image, made, target)
    assert refused, "the direct write was never tried"
    assert result.bad_ranges == [] and result.bytes_written == made.mapped_bytes
    assert _sha(target) == _sha(image)

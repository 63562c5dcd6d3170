#!/usr/bin/env python3
"""Image benchmark: `xnat-fleet image build`'s stages, timed, with the image's sizes.

    python benchmarks/images.py [-i INVENTORY] [--profile nuc|supermicro]
                                [--mode warm|template|cold|write|clone] [--build-dir DIR]
                                [--image DIR] [--json]

Builds the golden image of the example study (with the tests' stand-in artifacts: XNAT cannot
be downloaded here) through the same pipeline as the CLI (src/xnat_fleet/image/build.py) into
its own build directory (default ``build/bench``, kept between runs so that ``warm`` has a
cache), and reports seconds per stage, which stages did work and which reused a cache, the image
size, its mapped bytes and the compressed size.

Modes:

- ``warm`` (default): a rebuild with nothing changed (base root and converge reused);
- ``template``: one role template changed: a Jinja comment is appended to
  ``roles/smtp/templates/etc/postfix/main.cf.j2`` for the run (the rendered file stays the
  same, the template's hash does not) and the file is restored afterwards;
- ``cold``: an empty base cache and no converge cache (a first build on this machine; packages
  still come through the machine's apt cache);
- ``write``: our writer (write + read-back) against ``dd`` and ``bmaptool copy`` on one image;
- ``clone``: ``image clone`` of every relay of the profile (one run, all relays together),
  seconds per relay and each clone's bytes on disk against the image and its mapped bytes.

Needs root (the tree keeps its owners), podman and the bootstrap's tools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xnat_fleet.image import base, bmap, recipe
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import write as write_lib
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root

TEMPLATE = Path("roles/smtp/templates/etc/postfix/main.cf.j2")


class Collect(build_lib.Reporter):
    def __init__(self) -> None:
        self.notes: dict[str, str] = {}

    def done(self, stage: str, seconds: float, note: str) -> None:
        self.notes[stage] = note
        print(f"benchmark: {stage}: {seconds} s {note}", file=sys.stderr)


@contextmanager
def changed_template(path: Path) -> Any:
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"{# benchmarks/images.py: a change that renders nothing #}\n")
        yield
    finally:
        path.write_bytes(original)


def _cold_cache() -> None:
    """Every tool starts with the image out of the page cache (root only; else as it is)."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _timed(argv: list[str]) -> float:
    _cold_cache()
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)  # noqa: S603 (our own argv)
    return round(time.monotonic() - started, 2)


def _published(args: argparse.Namespace) -> Path:
    """--image, else the profile's latest published image."""
    return Path(
        args.image
        or next((project_root() / "build" / "images").glob(f"*-relay-{args.profile}-latest"))
    )


def _sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, check=check, capture_output=True, text=True)  # noqa: S603
    return proc.stdout.strip()


@contextmanager
def _target(kind: str, work: Path, size: int) -> Any:
    """Where one tool writes: ``file``, a new file next to the image (same virtual disk as the
    image: the tools' reads and writes share its bandwidth); ``device``, a loop device over a
    file in a tmpfs (a block device of its own, in RAM: a separate disk as when a relay's disk
    sits in a dock, with nothing of the controller's disk in its way)."""
    if kind == "file":
        path = work / "target.img"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    ram = work / "ram"
    ram.mkdir(exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", f"size={size + (64 << 20)}", "tmpfs", str(ram))
    try:
        backing = ram / "disk"
        with backing.open("wb") as f:
            f.truncate(size)
        dev = _sh("losetup", "--find", "--show", str(backing))
        try:
            yield Path(dev)
        finally:
            _sh("losetup", "--detach", dev, check=False)
    finally:
        _sh("umount", str(ram), check=False)


def _write_round(raw: Path, bmap_file: Path, kind: str, work: Path) -> dict[str, Any]:
    """Ours (write with read-back), dd of the whole image and bmaptool copy, each to a fresh
    target of KIND, each starting with the page cache dropped."""
    block_map = bmap.read(bmap_file)
    size = block_map.image_size
    with _target(kind, work, size) as target:
        _cold_cache()
        ours = write_lib.write(raw, block_map, target)
    with _target(kind, work, size) as target:
        dd = _timed(["dd", f"if={raw}", f"of={target}", "bs=4M", "conv=fsync", "status=none"])
    with _target(kind, work, size) as target:
        bmaptool = _timed(["bmaptool", "copy", "--bmap", str(bmap_file), str(raw), str(target)])
        _cold_cache()
        started = time.monotonic()
        bad = write_lib.verify(block_map, target)
        verify_alone = round(time.monotonic() - started, 2)  # of bmaptool's copy
    total = round(ours.write_seconds + ours.verify_seconds, 2)
    return {
        "target": kind,
        "bytes_written": ours.bytes_written,
        "ours_write_seconds": round(ours.write_seconds, 2),
        "ours_read_back_after_seconds": round(ours.verify_seconds, 2),
        "ours_total_seconds": total,
        "dd_seconds": dd,
        "bmaptool_copy_seconds": bmaptool,
        "verify_alone_seconds": verify_alone,
        "speedup_over_dd": round(dd / total, 2) if total else None,
        "ours_over_bmaptool": round(total / bmaptool, 2) if bmaptool else None,
        "verified": not ours.bad_ranges and not bad,
    }


def write_benchmark(args: argparse.Namespace) -> int:
    """Our writer (write + read-back) against dd of the whole image and bmaptool copy, on the
    same image in the same run, to both target kinds (_target), --runs times each."""
    raw = write_lib.find_image(_published(args))
    bmap_file = write_lib.find_bmap(raw)
    block_map = bmap.read(bmap_file)
    work = Path(tempfile.mkdtemp(prefix="xf-bench-write-", dir=project_root() / "build"))
    rounds: list[dict[str, Any]] = []
    try:
        for _ in range(args.runs):
            for kind in ("file", "device"):
                rounds.append(_write_round(raw, bmap_file, kind, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "image": str(raw),
        "image_bytes": block_map.image_size,
        "mapped_bytes": block_map.mapped_bytes,
        "rounds": rounds,
    }
    if args.as_json:
        print(json.dumps(doc, indent=2))
    else:
        mib = 1 << 20
        print(
            f"write benchmark: {raw.name}, {block_map.image_size / mib:.0f} MiB image, "
            f"{block_map.mapped_bytes / mib:.0f} MiB mapped"
        )
        print("  target   ours: write + read-back = total   dd       bmaptool  verify  x dd"
              "   ours/bmaptool")  # fmt: skip
        for r in rounds:
            print(
                f"  {r['target']:<7}  {r['ours_write_seconds']:>11} + "
                f"{r['ours_read_back_after_seconds']:<9} = {r['ours_total_seconds']:<5}   "
                f"{r['dd_seconds']:<7}  {r['bmaptool_copy_seconds']:<8}  "
                f"{r['verify_alone_seconds']:<6}  {r['speedup_over_dd']:<5}  "
                f"{r['ours_over_bmaptool']}"
            )
        print(f"  bytes written by ours: {rounds[0]['bytes_written'] if rounds else 0}")
    return 0 if all(r["verified"] and r["bytes_written"] == block_map.mapped_bytes
                    for r in rounds) else 1  # fmt: skip


def clone_benchmark(args: argparse.Namespace) -> int:
    """Clone every relay of the profile from the published golden image, timed."""
    from xnat_fleet.image import clone as clone_lib
    from xnat_fleet.model.loader import load_fleet

    published = _published(args)
    source = InventorySource(args.inventory)
    relays = [h.name for h in load_fleet(source).relays if h.config.fleet_hardware == args.profile]
    output = Path(tempfile.mkdtemp(prefix="xf-bench-clone-", dir=project_root() / "build"))
    try:
        started = time.monotonic()
        results = clone_lib.clone(
            source, relays, image=published, build_dir=project_root() / "build", output=output
        )
        total = round(time.monotonic() - started, 1)
        golden = clone_lib.open_golden(published)
        doc = {
            "image": str(golden.raw),
            "image_bytes": golden.manifest["size_bytes"],
            "golden_mapped_bytes": golden.manifest["mapped_bytes"],
            "relays": len(results),
            "total_seconds": total,
            "seconds_per_relay": round(total / max(len(results), 1), 1),
            "clones": {
                r.relay: {"delta_bytes": r.delta_bytes, "mapped_bytes": r.manifest["mapped_bytes"]}
                for r in results
            },
        }
    finally:
        shutil.rmtree(output, ignore_errors=True)
    if args.as_json:
        print(json.dumps(doc, indent=2))
    else:
        mib = 1 << 20
        print(
            f"clone benchmark: {len(results)} relay(s) of {args.profile} in {total} s "
            f"({doc['seconds_per_relay']} s per relay), image {doc['image_bytes'] / mib:.0f} MiB, "
            f"{doc['golden_mapped_bytes'] / mib:.0f} MiB mapped"
        )
        for relay, c in doc["clones"].items():
            print(
                f"  {relay:<14} {c['delta_bytes'] / 1024:.0f} KiB on disk, "
                f"{c['mapped_bytes'] / mib:.0f} MiB mapped (what a write puts on the disk)"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-i", "--inventory", type=Path, default=project_root() / "inventory/example")
    p.add_argument("--profile", default="nuc", choices=recipe.available())
    p.add_argument("--mode", default="warm", choices=["warm", "template", "cold", "write", "clone"])
    p.add_argument(
        "--image", type=Path, help="write/clone: the published image directory (default: latest)"
    )
    p.add_argument("--runs", type=int, default=3, help="write: rounds per target kind")
    p.add_argument("--build-dir", type=Path, default=project_root() / "build" / "bench")
    p.add_argument("--json", action="store_true", dest="as_json")
    args = p.parse_args(argv)
    if args.mode == "write":
        return write_benchmark(args)
    if args.mode == "clone":
        return clone_benchmark(args)
    reporter = Collect()
    base_cache: Path | None = None
    if args.mode == "cold":
        shutil.rmtree(args.build_dir / "cache", ignore_errors=True)
        base_cache = Path(tempfile.mkdtemp(prefix="xf-bench-base-"))
    source = InventorySource(args.inventory)

    def run() -> build_lib.BuildResult:
        if base_cache is not None:
            os.environ[base.CACHE_ENV] = str(base_cache)
        return build_lib.build(
            source, args.profile, build_dir=args.build_dir, standins=True,
            version=f"bench-{args.mode}", reporter=reporter,
        )  # fmt: skip

    try:
        if args.mode == "template":
            with changed_template(project_root() / TEMPLATE):
                result = run()
        else:
            result = run()
    finally:
        if base_cache is not None:
            shutil.rmtree(base_cache, ignore_errors=True)
    m = result.manifest
    zst = next(result.directory.glob("*.raw.zst"))
    doc: dict[str, Any] = {
        "profile": result.profile,
        "mode": args.mode,
        "changed": str(TEMPLATE) if args.mode == "template" else None,
        "stages_seconds": result.stages,
        "notes": reporter.notes,
        "total_seconds": round(sum(result.stages.values()), 1),
        "image_bytes": m["size_bytes"],
        "mapped_bytes": m["mapped_bytes"],
        "zst_bytes": zst.stat().st_size,
        "packages": m.get("packages"),
        "directory": str(result.directory),
    }
    if args.as_json:
        print(json.dumps(doc, indent=2))
    else:
        mib = 1 << 20
        print(f"image benchmark: profile {result.profile}, mode {args.mode}")
        for name, seconds in result.stages.items():
            print(f"  {name:<10} {seconds:7.1f} s  {reporter.notes.get(name, '')}")
        print(f"  {'total':<10} {doc['total_seconds']:7.1f} s")
        print(
            f"image {m['size_bytes'] / mib:.0f} MiB, mapped {m['mapped_bytes'] / mib:.0f} MiB, "
            f"zstd {doc['zst_bytes'] / mib:.0f} MiB, {m.get('packages')} packages"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Image benchmark: the relay image pipeline's stages, timed, with the image's sizes.

    python benchmarks/images.py [--profile nuc|supermicro] [--cold] [--work DIR] [--json]

Runs the stages that exist (docs/images.md) on the profile, in order: base (mmdebstrap, or
the cached tarball), unpack, seal, assemble, package (bmap, zstd, SHA256SUMS, manifest) and
the audit of the packaged raw image. ``--cold`` builds the base root into an empty cache
directory (a first build on a machine, packages from the apt cache), otherwise the machine's
cache is used (a warm rebuild). Reports seconds per stage, the image size, its mapped bytes and
the compressed size; ``--json`` for machines. The provisioning stage (the relay roles on the
imported root) is not built yet, so neither is its time here. Needs root (the tree keeps its
owners) and the bootstrap's tools.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from xnat_fleet import aptcache
from xnat_fleet.image import assemble, audit, base, bmap, package, recipe, seal

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", default="nuc", choices=recipe.available())
    p.add_argument("--cold", action="store_true", help="base root into an empty cache")
    p.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true", dest="as_json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="xf-image-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    r = recipe.load(args.profile)
    stages: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        out = fn()
        stages[name] = round(time.monotonic() - start, 1)
        print(f"benchmark: {name}: {stages[name]} s", file=sys.stderr)
        return out

    proxy = aptcache.ensure().replace("0.0.0.0", "127.0.0.1")  # noqa: S104 (the bind address)
    cache = work / "base-cache" if args.cold else None
    if cache is not None and cache.exists():
        shutil.rmtree(cache)
    tarball, reused = timed("base", lambda: base.build(r, apt_proxy=proxy, directory=cache))
    tree = timed("unpack", lambda: base.unpack(tarball, work / "tree"))
    timed("seal", lambda: seal.apply(tree, list(r.seal)))
    seal.stamp_os_release(tree, f"xnat-fleet-relay-{r.profile}", "bench", "0")
    out = work / "out"
    out.mkdir(exist_ok=True)
    raw = out / f"relay-{r.profile}.raw"
    image_id = f"xnat-fleet-relay-{r.profile}"
    timed("assemble", lambda: assemble.assemble(tree, r, raw, work / "assemble", image_id, "bench"))
    made = bmap.create(raw)
    meta = package.manifest(
        image_id=image_id, image_version="bench", profile=r.profile, study="benchmark",
        xnat_version="0", revision="bench", packages_digest=base.key(r),
        inputs={f"relay_images/{r.profile}.yml": r.digest()}, block_map=made,
    )  # fmt: skip
    shipped = timed("package", lambda: package.package(raw, meta))
    findings = timed("audit", lambda: audit.scan_image(raw))
    result: dict[str, Any] = {
        "profile": r.profile,
        "base": "reused" if reused else ("cold" if args.cold else "built"),
        "stages_seconds": stages,
        "total_seconds": round(sum(stages.values()), 1),
        "image_bytes": made.image_size,
        "mapped_bytes": made.mapped_bytes,
        "zst_bytes": shipped.zst.stat().st_size,
        "audit_findings": len(findings),
        "work": str(work),
    }
    if args.as_json:
        print(json.dumps(result, indent=2))
    else:
        mib = 1 << 20
        print(f"image benchmark: profile {r.profile}, base root {result['base']}")
        for name, seconds in stages.items():
            print(f"  {name:<10} {seconds:7.1f} s")
        print(f"  {'total':<10} {result['total_seconds']:7.1f} s")
        print(
            f"image {made.image_size / mib:.0f} MiB, mapped {made.mapped_bytes / mib:.0f} MiB, "
            f"zstd {result['zst_bytes'] / mib:.0f} MiB; audit findings: {len(findings)}"
        )
    return 0 if not findings else 1


if __name__ == "__main__":
    sys.exit(main())

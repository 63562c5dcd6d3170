"""Packaging: bmap from the sparse raw image, zstd that decompresses to the same bytes, qcow2,
a manifest, and SHA256SUMS that sha256sum -c accepts and that catches a changed file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.image_helpers import small_recipe, tiny_tree
from xnat_fleet.image import assemble, bmap, package


def test_the_shipping_files_check_out(tmp_path: Path) -> None:
    tree = tiny_tree(tmp_path / "tree")
    raw = tmp_path / "out" / "relay-nuc-1.raw"
    raw.parent.mkdir()
    assemble.assemble(tree, small_recipe(), raw, tmp_path / "work", "relay-nuc", "1")
    made = bmap.create(raw)
    meta = package.manifest(
        image_id="xnat-fleet-relay-nuc", image_version="1", profile="nuc", study="demo",
        xnat_version="1.8.10", revision="abc123", packages_digest="0" * 64,
        inputs={"relay_images/nuc.yml": "1" * 64}, block_map=made,
    )  # fmt: skip
    out = package.package(raw, meta, qcow2=True)
    assert bmap.read(out.bmap).ranges == made.ranges
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=raw.parent, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert set(out.files) == {
        raw.name,
        out.bmap.name,
        out.zst.name,
        out.manifest.name,
        "relay-nuc-1.qcow2",
    }
    back = tmp_path / "back.raw"
    subprocess.run(["zstd", "-q", "-d", "-o", str(back), str(out.zst)], check=True)
    assert back.read_bytes() == raw.read_bytes()
    assert out.qcow2 is not None
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(out.qcow2)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == raw.stat().st_size
    doc = json.loads(out.manifest.read_text())
    assert doc["xnat_version"] == "1.8.10" and doc["mapped_bytes"] == made.mapped_bytes
    assert doc["files"][raw.name] == out.files[raw.name]
    # A changed byte anywhere is caught by the sums.
    with out.zst.open("r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    bad = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=raw.parent, capture_output=True, text=True
    )
    assert bad.returncode != 0 and f"{out.zst.name}: FAILED" in bad.stdout

"""The clone's building blocks without an image: the derived block map and the overlay's
changes against the identity list (src/xnat_fleet/image/bmap.py, clone.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xnat_fleet.image import bmap as bmap_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import write as write_lib

BS = bmap_lib.BLOCK_SIZE


def _put(path: Path, block: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(block * BS)
        f.write(data)


def test_derived_map_rehashes_only_what_changed(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    with image.open("wb") as f:
        f.truncate(256 * BS)
    _put(image, 0, os.urandom(4 * BS))
    _put(image, 100, os.urandom(4 * BS))
    base = bmap_lib.create(image)
    assert [(r.first, r.last) for r in base.ranges] == [(0, 3), (100, 103)]
    _put(image, 101, b"changed")  # inside a mapped range
    _put(image, 50, b"new data")  # in a hole
    derived = bmap_lib.derive(base, [(101 * BS, 7), (50 * BS, 8)], image)
    assert [(r.first, r.last) for r in derived.ranges] == [(0, 3), (50, 50), (100, 103)]
    assert derived.ranges[0].sha256 == base.ranges[0].sha256  # untouched: kept
    assert derived.ranges[2].sha256 != base.ranges[1].sha256  # touched: hashed again
    assert write_lib.verify(derived, image) == []
    assert write_lib.verify(base, image) != []  # the old map no longer fits the disk


def test_changes_are_the_identity_and_nothing_else(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (
        lower / "etc",
        lower / "root",
        upper / "etc",
        upper / "root/.ansible/tmp",
        upper / "etc/new.d",
    ):
        d.mkdir(parents=True)
    (lower / "etc/same").write_text("x\n")
    (upper / "etc/same").write_text("x\n")  # opened for writing, unchanged
    (lower / "etc/gone").write_text("old\n")
    os.mknod(upper / "etc/gone", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout
    (upper / "etc/hostname").write_text("relay-kings\n")
    (upper / "etc/stray").write_text("?\n")
    (upper / "root/.ansible/tmp/x").write_text("scratch")
    (upper / "etc/new.d/one").write_text("1\n")
    found, refused = clone_lib.changes(
        upper, lower, ["/etc/hostname", "/etc/gone", "/etc/new.d", "/etc/new.d/*"]
    )
    assert sorted((c.kind, c.path) for c in found) == [
        ("delete", "/etc/gone"),
        ("dir", "/etc/new.d"),
        ("file", "/etc/hostname"),
        ("file", "/etc/new.d/one"),
    ]
    assert refused == ["/etc/stray"]


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"address": "10.61.0.10"}, "needs its prefix length"),
        ({"address": "10.61.0.0/24"}, "network's own address"),
        ({"address": "10.61.0.10/24", "gateway": "10.62.0.1"}, "outside 10.61.0.0/24"),
        ({"gateway": "10.61.0.1"}, "without address"),
        ({"mac": "00:25:90:5E:1A:01"}, "lower case"),
        ({"dns": ["resolver.example.org"]}, "not an IP address"),
    ],
)
def test_fleet_network_is_validated(network: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from xnat_fleet.model.fleet import HostNetwork

    with pytest.raises(ValidationError, match=message):
        HostNetwork.model_validate(network)

"""The golden NUC image of the example study, built once per test session (image tier).

`xnat-fleet image build`'s own pipeline (src/xnat_fleet/image/build.py) with the tests'
stand-in artifacts in place of XNAT (which cannot be downloaded here; the manifest says so).
Its build directory is the checkout's ``build/test`` (git-ignored), so a developer's second run
reuses the base root and the converge; a fresh CI machine builds both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_example
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.model.loader import InventorySource

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inventory" / "example"
BUILD_DIR = ROOT / "build" / "test"
VERSION = "test"
# QEMU's user network for the clone boot tests, inside the example's admin network.
QEMU_NET = "10.50.100.0/24"
QEMU_HOST, QEMU_DNS, QEMU_GUEST = "10.50.100.2", "10.50.100.3", "10.50.100.15"
QEMU_MAC = "52:54:00:12:34:56"


@pytest.fixture(scope="session")
def golden() -> build_lib.BuildResult:
    return build_lib.build(
        InventorySource(EXAMPLE), "nuc", build_dir=BUILD_DIR, standins=True, version=VERSION
    )


@pytest.fixture(scope="session")
def two_nuc_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example study with relay-leeds on a NUC too (two clones of one image), its network
    QEMU's user network: a static address on the admin network 10.50.100.0/24, where QEMU's
    host side (10.50.100.2) is, so that the study's firewall admits SSH from it; matched by
    the MAC of QEMU's NIC."""
    inv = tmp_path_factory.mktemp("clone-inventory") / "example"
    copy_example(inv)
    site = inv / "host_vars" / "relay-leeds" / "site.yml"
    data = yaml.safe_load(site.read_text())
    data["fleet_hardware"] = "nuc"
    data["fleet_network"] = {
        "mac": QEMU_MAC, "address": f"{QEMU_GUEST}/24", "gateway": QEMU_HOST, "dns": [QEMU_DNS],
    }  # fmt: skip
    site.write_text(yaml.safe_dump(data))
    return inv


@pytest.fixture(scope="session")
def clones(
    golden: build_lib.BuildResult, two_nuc_inventory: Path
) -> dict[str, clone_lib.CloneResult]:
    results = clone_lib.clone(
        InventorySource(two_nuc_inventory),
        ["relay-kings", "relay-leeds"],
        image=golden.directory,
        build_dir=BUILD_DIR,
        output=BUILD_DIR / "clones",
    )
    return {r.relay: r for r in results}

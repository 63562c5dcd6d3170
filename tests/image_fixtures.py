"""The golden NUC image of the example study, built once per test session (image tier).

`xnat-fleet image build`'s own pipeline (src/xnat_fleet/image/build.py) with the tests'
stand-in artifacts in place of XNAT (which cannot be downloaded here; the manifest says so).
Its build directory is the checkout's ``build/test`` (git-ignored), so a developer's second run
reuses the base root and the converge; a fresh CI machine builds both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xnat_fleet.image import build as build_lib
from xnat_fleet.model.loader import InventorySource

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inventory" / "example"
BUILD_DIR = ROOT / "build" / "test"
VERSION = "test"


@pytest.fixture(scope="session")
def golden() -> build_lib.BuildResult:
    return build_lib.build(
        InventorySource(EXAMPLE), "nuc", build_dir=BUILD_DIR, standins=True, version=VERSION
    )

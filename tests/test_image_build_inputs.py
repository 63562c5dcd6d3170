"""The build's checks before anything runs, and the provisioning cache key: a golden image has
no per-site input, so the number of relays (and any relay's host_vars) never changes it, while a
role template or a study-wide setting does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ScratchInventory
from xnat_fleet.errors import FleetError, InventoryError
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import provision, recipe
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root

DIGESTS = {"web": "a" * 64, "tomcat": "b" * 64}


def _key(study: Path, root: Path | None = None) -> str:
    return provision.key(provision.inputs(recipe.load("nuc"), "basekey", study, DIGESTS, root))


def _add_relay(inv: ScratchInventory, name: str, site: str) -> None:
    hosts = inv.load("hosts.yml")
    hosts["all"]["children"]["relays"]["hosts"][name] = {"ansible_host": "10.63.0.10"}
    inv.dump("hosts.yml", hosts)
    kings = inv.load("host_vars/relay-kings/site.yml")
    kings["fleet_site"] = {"id": site, "name": f"{site} hospital"}
    kings["fleet_fqdn"] = f"{name}.prism.example.org"
    inv.dump(f"host_vars/{name}.yml", kings)


def test_the_number_of_relays_does_not_change_the_image(scratch: ScratchInventory) -> None:
    before = _key(scratch.path)
    _add_relay(scratch, "relay-york", "YORK")
    _add_relay(scratch, "relay-bath", "BATH")
    scratch.set("host_vars/relay-kings/site.yml", "fleet_scanners[0].address", "10.61.1.99")
    assert _key(scratch.path) == before
    inputs = provision.inputs(recipe.load("nuc"), "basekey", scratch.path, DIGESTS)
    assert not [k for k in inputs if "host_vars" in k or k.endswith("hosts.yml")]
    assert "inventory/group_vars/all/vault.yml" in inputs
    assert "inventory/group_vars/relays/relay.yml" in inputs
    assert not [k for k in inputs if k.startswith("inventory/group_vars/central")]


def test_a_study_setting_or_a_role_template_changes_the_image(
    scratch: ScratchInventory, tmp_path: Path
) -> None:
    before = _key(scratch.path)
    scratch.set("group_vars/relays/relay.yml", "fleet_dicom_receivers[0].port", 11112)
    assert _key(scratch.path) != before
    # A copy of the project's inputs with one role template changed.
    root = tmp_path / "project"
    for name in provision.PROJECT_INPUTS:
        src = project_root() / name
        dst = root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    same = _key(scratch.path, root)
    template = root / "roles/smtp/templates/etc/postfix/main.cf.j2"
    template.write_text(template.read_text() + "# changed\n")
    assert _key(scratch.path, root) != same


def test_the_build_refuses_relays_whose_xnat_differs_from_the_central(
    scratch: ScratchInventory, tmp_path: Path
) -> None:
    scratch.set("host_vars/relay-leeds/site.yml", "fleet_xnat", {"version": "1.9.2.1"})
    with pytest.raises(InventoryError) as caught:
        build_lib.build(InventorySource(scratch.path), "nuc", build_dir=tmp_path / "build")
    message = str(caught.value)
    assert "relay-leeds" in message and "fleet_xnat.version" in message
    assert not (tmp_path / "build").exists()  # nothing was started or written


def test_the_build_refuses_relays_with_different_plugins(
    scratch: ScratchInventory, tmp_path: Path
) -> None:
    scratch.set("host_vars/relay-leeds/site.yml", "fleet_plugins", ["xsync", "ldap-auth"])
    with pytest.raises(FleetError, match=r"relay-kings: xsync; relay-leeds: xsync, ldap-auth"):
        build_lib.build(InventorySource(scratch.path), "nuc", build_dir=tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_the_build_inventory_carries_no_relay_and_links_the_study_group_vars(
    tmp_path: Path,
) -> None:
    study = project_root() / "inventory" / "example"
    inv = provision.write_inventory(
        tmp_path / "inv", study, "xf-image-x", {"fleet_hardware": "nuc"}
    )
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    relays = hosts["all"]["children"]["relays"]["hosts"]
    assert list(relays) == [provision.BUILD_HOST]
    assert relays[provision.BUILD_HOST]["ansible_connection"] == "podman"
    assert relays[provision.BUILD_HOST]["fleet_fqdn"].endswith(".invalid")
    linked = sorted(p.name for p in (inv / "group_vars").iterdir())
    assert linked == ["all", "relays"]
    assert (inv / "group_vars/all").resolve() == (study / "group_vars/all").resolve()


def test_installed_packages_reads_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: b\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n"
        "Package: a\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n"
        "Package: c\nStatus: install ok installed\nArchitecture: all\nVersion: 3\n"
        "Description: x\n more text: here\n"
    )
    assert build_lib.installed_packages(tmp_path) == ["b:amd64=2", "c:all=3"]


def test_unpack_streams_the_tarball_with_progress(tmp_path: Path) -> None:
    import tarfile

    from xnat_fleet.image import base

    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc/hostname").write_text("relay\n")
    (src / "etc/secret").write_text("x")
    (src / "etc/secret").chmod(0o600)
    (src / "etc/os-release").symlink_to("../usr/lib/os-release")
    tarball = tmp_path / "root.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(src, arcname=".")
    tree = tmp_path / "tree"
    (tree / "stale").mkdir(parents=True)  # a previous tree is replaced
    seen: list[int] = []
    base.unpack(tarball, tree, seen.append)
    assert (tree / "etc/hostname").read_text() == "relay\n"
    assert (tree / "etc/secret").stat().st_mode & 0o777 == 0o600
    assert str((tree / "etc/os-release").readlink()) == "../usr/lib/os-release"
    assert not (tree / "stale").exists()
    assert 0 < sum(seen) <= tarball.stat().st_size

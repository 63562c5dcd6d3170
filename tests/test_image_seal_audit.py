"""Sealing a tree with the recipe's list, and the audit that finds what must not ship: planted
private keys, vault values, host keys, histories, leases, seeds, logs, provisioning keys, in a
tree and inside an assembled disk image."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.image_helpers import small_recipe, tiny_tree
from xnat_fleet.image import assemble, audit, recipe, seal

BUILD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuildKeyOfTheImageBuild000000000000000 xf-build"
VAULT_VALUE = "s3cr3t-db-password-from-the-vault"


def _dirty(root: Path) -> Path:
    """What a provisioned tree holds before sealing."""
    tiny_tree(root)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            str(root / "etc/ssh/ssh_host_ed25519_key"),
        ],
        check=True,
    )
    (root / "var/lib/systemd").mkdir(parents=True)
    (root / "var/lib/systemd/random-seed").write_bytes(b"\x01" * 512)
    (root / "var/lib/systemd/credential.secret").write_bytes(b"\x02" * 32)
    (root / "var/lib/dhcp").mkdir(parents=True)
    (root / "var/lib/dhcp/dhclient.eth0.leases").write_text("lease {}\n")
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/log/apt/history.log").write_text("Start-Date: today\n")
    (root / "var/log/journal/abc").mkdir(parents=True)
    (root / "var/log/journal/abc/system.journal").write_bytes(b"LPKSHHRH" + b"\0" * 100)
    (root / "root").mkdir()
    (root / "root/.bash_history").write_text("ls\n")
    (root / "root/.ssh").mkdir()
    (root / "root/.ssh/authorized_keys").write_text(BUILD_KEY + "\n")
    (root / "etc/apt/apt.conf.d").mkdir(parents=True)
    (root / "etc/apt/apt.conf.d/99mmdebstrap").write_text('Acquire::http::Proxy "x";\n')
    # What the ssl-cert package makes at installation (PostgreSQL's cluster uses it).
    (root / "etc/ssl/private").mkdir(parents=True)
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out",
         str(root / "etc/ssl/private/ssl-cert-snakeoil.key")],
        check=True,
    )  # fmt: skip
    (root / "tmp").mkdir()
    (root / "tmp/build.txt").write_text("x")
    return root


def test_the_audit_finds_everything_a_provisioned_tree_holds(tmp_path: Path) -> None:
    root = _dirty(tmp_path / "tree")
    found = audit.scan_tree(root, secrets=[VAULT_VALUE], provisioning_keys=[BUILD_KEY])
    rules = {(f.path, f.rule) for f in found}
    assert ("/etc/ssh/ssh_host_ed25519_key", "private-key") in rules
    assert ("/etc/ssh/ssh_host_ed25519_key.pub", "ssh-host-key") in rules
    assert ("/etc/machine-id", "machine-id") in rules
    assert ("/var/lib/systemd/random-seed", "random-seed") in rules
    assert ("/var/lib/systemd/credential.secret", "credential-secret") in rules
    assert ("/var/lib/dhcp/dhclient.eth0.leases", "dhcp-lease") in rules
    assert ("/var/log/apt/history.log", "log") in rules
    assert ("/root/.bash_history", "shell-history") in rules
    assert ("/root/.ssh/authorized_keys", "provisioning-key") in rules
    assert ("/etc/ssl/private/ssl-cert-snakeoil.key", "private-key") in rules


def test_sealing_with_the_recipes_list_leaves_nothing_to_find(tmp_path: Path) -> None:
    root = _dirty(tmp_path / "tree")
    r = recipe.load("nuc")
    applied = seal.apply(root, list(r.seal))
    seal.stamp_os_release(root, "xnat-fleet-relay-nuc", "2026.12.02-1", "1.8.10")
    assert audit.scan_tree(root, secrets=[VAULT_VALUE], provisioning_keys=[BUILD_KEY]) == []
    assert (root / "etc/machine-id").read_text() == "uninitialized\n"
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    dropin = root / "etc/systemd/system/ssh.service.d/10-xnat-fleet-keygen.conf"
    assert "ExecStartPre=/usr/bin/ssh-keygen -A" in dropin.read_text()
    firstboot = root / "etc/systemd/system/systemd-firstboot.service"
    assert firstboot.is_symlink() and str(firstboot.readlink()) == "/dev/null"
    # Logs are emptied, not removed (their directories and owners stay); the journal goes.
    assert (root / "var/log/apt/history.log").stat().st_size == 0
    assert not (root / "var/log/journal/abc").exists()
    assert not (root / "etc/apt/apt.conf.d/99mmdebstrap").exists()
    assert not (root / "etc/ssl/private/ssl-cert-snakeoil.key").exists()
    unit = root / "etc/systemd/system/sysinit.target.wants/xnat-fleet-snakeoil.service"
    assert "make-ssl-cert generate-default-snakeoil" in unit.read_text()
    # os-release is the tree's own file behind the symlink, stamped.
    fields = seal.read_os_release(root)
    assert (
        fields["IMAGE_ID"] == "xnat-fleet-relay-nuc" and fields["IMAGE_VERSION"] == "2026.12.02-1"
    )
    assert fields[seal.XNAT_VERSION_KEY] == "1.8.10" and fields["ID"] == "debian"
    assert (root / "etc/os-release").is_symlink()
    changed = {p for a in applied for p in a.paths}
    assert "/var/lib/systemd/random-seed" in changed and "/etc/hostname" in changed


def test_a_planted_key_or_vault_value_is_found_inside_a_disk_image(tmp_path: Path) -> None:
    root = tiny_tree(tmp_path / "tree")
    seal.apply(root, list(recipe.load("nuc").seal))
    (root / "opt").mkdir()
    # Past the first MiB of a file, across the scanner's chunk border.
    blob = b"\0" * ((1 << 20) - 10) + f"password={VAULT_VALUE}\n".encode()
    (root / "opt/app.bin").write_bytes(blob)
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(root / "opt/tls.key")],
        check=True,
    )
    image = tmp_path / "disk.raw"
    assemble.assemble(root, small_recipe(), image, tmp_path / "work", "relay-nuc", "1")
    found = audit.scan_image(image, secrets=[VAULT_VALUE])
    assert {(f.path, f.rule) for f in found} == {
        ("/opt/app.bin", "vault-value"),
        ("/opt/tls.key", "private-key"),
    }, found


def test_sealing_refuses_a_path_through_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    root = tiny_tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.log").write_text("must survive\n")
    (root / "var/log").rmdir()
    (root / "var/log").symlink_to(outside)
    step = recipe.SealStep(path="/var/log/**/*", action="truncate", why="test")
    with pytest.raises(seal.SealError, match="leaves the tree"):
        seal.apply(root, [step])
    assert (outside / "keep.log").read_text() == "must survive\n"


def test_the_audit_command_finds_a_value_of_the_example_vault(tmp_path: Path) -> None:
    import json as json_lib

    from click.testing import CliRunner

    from tests.conftest import DEMO_PASSWORD, EXAMPLE
    from xnat_fleet.cli import cli
    from xnat_fleet.model.loader import InventorySource, load_inventory
    from xnat_fleet.runner import inventory_secrets

    source = InventorySource(path=EXAMPLE, vault_password_file=DEMO_PASSWORD)
    values = inventory_secrets(load_inventory(source).hostvars, source.vault_password())
    planted = max(values, key=len)
    root = tiny_tree(tmp_path / "tree")
    seal.apply(root, list(recipe.load("nuc").seal))
    args = [
        "image",
        "audit",
        str(root),
        "-i",
        str(EXAMPLE),
        "--vault-password-file",
        str(DEMO_PASSWORD),
    ]
    clean = CliRunner().invoke(cli, [*args, "--json"])
    assert clean.exit_code == 0, clean.output
    assert json_lib.loads(clean.output)["vault_values_checked"] == len(values) > 3
    (root / "etc" / "xnat.properties").write_text(f"password={planted}\n")
    dirty = CliRunner().invoke(cli, args)
    assert dirty.exit_code == 1
    assert "/etc/xnat.properties: vault-value" in dirty.output
    assert planted not in dirty.output  # the finding never prints the secret


def test_reading_an_image_never_follows_its_symlinks_onto_this_machine(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / "secret-of-this-machine.txt").write_text(f"{VAULT_VALUE}\n")
    root = tiny_tree(tmp_path / "tree")
    seal.apply(root, list(recipe.load("nuc").seal))
    (root / "var" / "lock").symlink_to(outside)  # absolute, as Debian's /var/lock -> /run/lock
    image = tmp_path / "disk.raw"
    assemble.assemble(root, small_recipe(), image, tmp_path / "work", "relay-nuc", "1")
    assert audit.scan_image(image, secrets=[VAULT_VALUE]) == []
    assert (outside.stat().st_mode & 0o777) == 0o700


def test_a_key_a_debian_package_ships_unchanged_is_not_a_finding(tmp_path: Path) -> None:
    import hashlib

    root = tiny_tree(tmp_path / "tree")
    seal.apply(root, list(recipe.load("nuc").seal))
    lib = root / "usr/lib/libselftest.so"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(lib)], check=True)
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    md5 = hashlib.md5(lib.read_bytes(), usedforsecurity=False).hexdigest()
    (info / "libselftest.md5sums").write_text(f"{md5}  usr/lib/libselftest.so\n")
    assert audit.scan_tree(root) == []
    lib.write_bytes(lib.read_bytes() + b"\n")  # changed after installation: no longer Debian's
    assert [(f.path, f.rule) for f in audit.scan_tree(root)] == [
        ("/usr/lib/libselftest.so", "private-key")
    ]


def test_the_preset_keeps_the_enabled_units_and_enables_nothing_else(tmp_path: Path) -> None:
    root = tiny_tree(tmp_path / "tree")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    getty = root / "etc/systemd/system/getty.target.wants"
    getty.mkdir()
    (getty / "getty@tty1.service").symlink_to("/lib/systemd/system/getty@.service")
    seal.apply(root, list(recipe.load("nuc").seal))
    lines = (root / "etc/systemd/system-preset/00-xnat-fleet-image.preset").read_text().splitlines()
    rules = [x for x in lines if not x.startswith("#")]
    assert rules[-1] == "disable *"
    assert "enable ssh.service" in rules and "enable getty@.service tty1" in rules
    # what sealing itself enabled is kept too; a unit the roles left disabled is not named
    assert "enable xnat-fleet-ssh-keygen.service" in rules
    assert "enable xnat-fleet-snakeoil.service" in rules
    assert not [x for x in rules if "tomcat" in x]

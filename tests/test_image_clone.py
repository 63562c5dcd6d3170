"""`xnat-fleet image clone` on the golden NUC image of the tests (tests/image_fixtures.py).

The equivalence test: a clone started from its own root as a systemd container runs its first
boot, and then the relay playbook finds nothing to do (`relay.yml --check`: changed=0 on every
task). It is what keeps the profile's `identity` list complete. The other tests check what a
clone is: a small qcow2 delta over the golden raw image, its own keys and secrets, a block map
that verifies, and refusals of what must not be cloned.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.image_fixtures import BUILD_DIR, EXAMPLE, QEMU_MAC
from xnat_fleet import container_ssh
from xnat_fleet.image import bmap as bmap_lib
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import disk as disk_lib
from xnat_fleet.image import write as write_lib
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.runner import Progress, run_playbook

pytestmark = pytest.mark.image


def _read(clone: clone_lib.CloneResult, path: str, into: Path) -> bytes:
    part = disk_lib.partition(Path(clone.manifest["golden"]["raw"]), clone_lib.ROOT_PARTITION)
    with disk_lib.exported(clone.disk) as raw, disk_lib.mounted(raw, part, into) as root:
        return (root / path.lstrip("/")).read_bytes()


def test_clone_is_a_small_delta_with_a_block_map_that_verifies(
    clones: dict[str, clone_lib.CloneResult], golden: build_lib.BuildResult
) -> None:
    kings = clones["relay-kings"]
    assert kings.delta_bytes < 16 << 20, kings.delta_bytes  # MiBs, not the image's GiBs
    assert kings.manifest["golden"]["image_version"] == golden.image_version
    block_map = bmap_lib.read(kings.bmap)
    with disk_lib.exported(kings.disk) as raw:
        assert write_lib.verify(block_map, raw) == []
    golden_map = bmap_lib.read(golden.directory / f"{golden.image_id}-test.bmap")
    assert block_map.mapped_bytes >= golden_map.mapped_bytes
    # every path the identity list names as written is there; nothing else was written
    written = {line.split(" ", 1)[1] for line in kings.manifest["identity"]}
    assert {"/etc/hostname", "/etc/nftables.conf", "/etc/ssl/xnat-fleet/proxy.key"} <= written


def test_two_clones_share_no_key_or_secret(
    clones: dict[str, clone_lib.CloneResult], tmp_path: Path
) -> None:
    a, b = clones["relay-kings"], clones["relay-leeds"]
    assert a.manifest["ssh_host_key_fingerprints"] != b.manifest["ssh_host_key_fingerprints"]
    assert a.manifest["tls_certificate_sha256"] != b.manifest["tls_certificate_sha256"]
    for path in (
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssl/xnat-fleet/proxy.key",
        "/data/xnat/home/config/xnat-conf.properties",
        "/data/xnat/home/config/prefs-init.ini",
    ):
        assert _read(a, path, tmp_path / "a") != _read(b, path, tmp_path / "b"), path
    props = _read(a, "/data/xnat/home/config/xnat-conf.properties", tmp_path / "a").decode()
    hostname = _read(a, "/etc/hostname", tmp_path / "a").decode()
    network = _read(a, "/etc/systemd/network/10-relay.network", tmp_path / "a").decode()
    assert "datasource.password=" in props and hostname == "relay-kings\n"
    assert "Address=10.61.0.10/24" in network and "Type=ether" in network
    leeds = _read(b, "/etc/systemd/network/10-relay.network", tmp_path / "b").decode()
    assert f"MACAddress={QEMU_MAC}" in leeds and "Address=10.50.100.15/24" in leeds


def test_clone_refuses_a_relay_of_another_profile(golden: build_lib.BuildResult) -> None:
    with pytest.raises(clone_lib.CloneError, match="relay-leeds: fleet_hardware is supermicro"):
        clone_lib.clone(
            InventorySource(EXAMPLE), ["relay-leeds"], image=golden.directory,
            build_dir=BUILD_DIR, output=BUILD_DIR / "clones-refused",
        )  # fmt: skip


def test_clone_refuses_shared_secrets_and_a_changed_study(
    golden: build_lib.BuildResult, two_nuc_inventory: Path, tmp_path: Path
) -> None:
    inv = tmp_path / "example"
    shutil.copytree(two_nuc_inventory, inv, symlinks=True)
    shutil.copy(inv / "host_vars/relay-kings/vault.yml", inv / "host_vars/relay-leeds/vault.yml")
    network = inv / "group_vars/all/network.yml"
    network.write_text(network.read_text() + "# edited after the image was built\n")
    with pytest.raises(clone_lib.CloneError) as info:
        clone_lib.clone(
            InventorySource(inv), ["relay-kings"], image=golden.directory,
            build_dir=BUILD_DIR, output=tmp_path / "clones",
        )  # fmt: skip
    message = str(info.value)
    assert "vault_xnat_db_password is the same as relay-kings's" in message
    assert "group_vars/all/network.yml changed since" in message
    assert not (tmp_path / "clones").exists()  # refused before anything was made


@pytest.fixture
def booted(clones: dict[str, clone_lib.CloneResult], tmp_path: Path) -> Iterator[str]:
    """relay-kings's clone started from its own root as a systemd container (its first boot)."""
    kings = clones["relay-kings"]
    part = disk_lib.partition(Path(kings.manifest["golden"]["raw"]), clone_lib.ROOT_PARTITION)
    name = f"xf-clone-boot-{os.getpid()}"
    with ExitStack() as stack:
        raw = stack.enter_context(disk_lib.exported(kings.disk))
        lower = stack.enter_context(disk_lib.mounted(raw, part, tmp_path / "lower"))
        merged, _upper = stack.enter_context(clone_lib.overlay(lower, tmp_path / "overlay"))
        container_ssh.podman_checked(
            "run", "-d", "--name", name, "--hostname", "relay-kings", "--systemd=always",
            "--cap-add", "NET_ADMIN", "--rootfs", str(merged), "/sbin/init",
        )  # fmt: skip
        try:
            container_ssh.wait_booted(name, timeout=240)
            # The container has no CAP_SYS_TIME (it would set this machine's clock), so chrony's
            # unit condition skips it; a runtime drop-in in /run (not the clone's files) runs it
            # with -x (measure, never set the clock), as a relay's chrony runs on its hardware.
            container_ssh.podman_checked(
                "exec", name, "sh", "-c",
                "mkdir -p /run/systemd/system/chrony.service.d && printf '%s\\n' '[Unit]' "
                "'ConditionCapability=' '[Service]' 'ExecStart=' "
                "'ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x' "
                "> /run/systemd/system/chrony.service.d/test-no-clock.conf "
                "&& systemctl daemon-reload && systemctl start chrony",
            )  # fmt: skip
            yield name
        finally:
            container_ssh.podman("rm", "-f", "-t", "20", "--ignore", name)


def test_a_booted_clone_needs_nothing_from_the_relay_playbook(
    booted: str, two_nuc_inventory: Path
) -> None:
    runs = container_ssh.podman("exec", booted, "cat", "/var/lib/xnat-fleet/first-boot.runs")
    assert runs.returncode == 0 and runs.stdout.splitlines()[-1].endswith(" done"), runs.stdout
    active = container_ssh.podman("exec", booted, "systemctl", "is-active", "tomcat")
    assert active.stdout.strip() == "active"  # started by the first boot, after the database
    gate = container_ssh.podman("exec", booted, "nft", "list", "table", "inet", "xnat_fleet_gate")
    assert gate.returncode == 0 and "drop" in gate.stdout  # XNAT's ports closed until apply

    overlay = two_nuc_inventory.parent / "equivalence-connection.yml"
    from xnat_fleet.model.loader import load_fleet

    fleet = load_fleet(InventorySource(two_nuc_inventory))
    host_vars = clone_lib.standin_host_vars(fleet, BUILD_DIR)  # the image's own stand-ins
    clone_lib.connection_overlay(overlay, {"relay-kings": booted}, host_vars)
    changed: list[str] = []

    def seen(p: Progress) -> None:
        if p.kind == "changed":
            changed.append(p.task)

    result = run_playbook(
        "relay.yml",
        InventorySource(two_nuc_inventory, overlays=[overlay]),
        limit="relay-kings",
        check=True,
        artifact_store=clone_lib.standins_store(BUILD_DIR),
        on_progress=seen,
    )
    assert result.success, result.failures or result.output
    assert changed == [], f"relay.yml --check would change a clone: {changed}"
    assert result.hosts["relay-kings"].changed == 0

"""Boot tests of personalised clones (tests/image_fixtures.py: relay-leeds of the two-NUC study).

A clone is written with `xnat-fleet image write` to a file disk larger than the image, which
records it in the study's registry; the disk boots under QEMU (TCG, OVMF) through UEFI to a
login prompt with no failed unit; it is the clone itself (host name, SSH host key, a machine
id of its own); paramiko accepts it trusting only the registry's keys and refuses it trusting
another relay's; its first boot grew the root, made the data partition, ran once and started
Tomcat behind the closed XNAT gate; the second boot does not run it again; and a first boot
cut off half-way (a power cut) completes on the next boot.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from tests.image_fixtures import QEMU_GUEST, QEMU_HOST, QEMU_NET
from xnat_fleet.cli import cli
from xnat_fleet.image import audit, qemu
from xnat_fleet.image import clone as clone_lib
from xnat_fleet.image import disk as disk_lib
from xnat_fleet.image import registry as registry_lib

pytestmark = pytest.mark.image
MEMORY_MIB = 3072
# A disk larger than the 4 GiB image: the first boot grows the root and makes the data
# partition (1 GiB at least: roles/storage) on the rest.
DISK_BYTES = 6 << 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nic(port: int) -> str:
    return (
        f"user,model=virtio-net-pci,net={QEMU_NET},host={QEMU_HOST},"
        f"hostfwd=tcp:127.0.0.1:{port}-{QEMU_GUEST}:22"
    )


def _write(clone: clone_lib.CloneResult, disk: Path) -> dict[str, object]:
    subprocess.run(["truncate", "-s", str(DISK_BYTES), str(disk)], check=True)
    result = CliRunner().invoke(
        cli,
        ["image", "write", str(clone.directory), "--device", str(disk), "--allow-standins",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _host_key_verdict(port: int, known_hosts: str, tmp_path: Path) -> str:
    """What paramiko says about the guest's host key trusting only KNOWN_HOSTS."""
    path = tmp_path / f"known_hosts-{abs(hash(known_hosts))}"
    path.write_text(known_hosts)
    client = paramiko.SSHClient()
    client.load_host_keys(str(path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1", port=port, username="nobody", look_for_keys=False, allow_agent=False,
            password=None, timeout=30, banner_timeout=60, auth_timeout=30,
        )  # fmt: skip
    except paramiko.AuthenticationException:
        return "trusted"  # the host key matched; no account of ours was offered
    except paramiko.BadHostKeyException:
        return "bad host key"
    except paramiko.SSHException as exc:
        # paramiko checks the host key first; only then does it find we offer no credentials
        if str(exc) == "No authentication methods available":
            return "trusted"
        return f"refused: {exc}"
    finally:
        client.close()
    return "logged in"


def test_written_clone_boots_as_itself_and_is_trusted_by_the_registry(
    clones: dict[str, clone_lib.CloneResult], two_nuc_inventory: Path, tmp_path: Path
) -> None:
    missing = qemu.requirements()
    assert not missing, f"QEMU/OVMF missing (make bootstrap installs them): {missing}"
    leeds, kings = clones["relay-leeds"], clones["relay-kings"]
    disk = tmp_path / "leeds-disk.raw"
    report = _write(leeds, disk)
    assert report["verified"] is True
    assert report["bytes_written"] == leeds.manifest["mapped_bytes"]
    record = report["registry_record"]
    assert isinstance(record, dict) and record["relay"] == "relay-leeds"
    reg = registry_lib.load(registry_lib.path_for(two_nuc_inventory))
    current = reg.current()["relay-leeds"]
    assert {k.fingerprint for k in current.ssh_host_keys} == set(
        leeds.manifest["ssh_host_key_fingerprints"].values()
    )

    port = _free_port()
    trusted = registry_lib.known_hosts(reg, {"relay-leeds": ("127.0.0.1", port)})
    other = registry_lib.Registry(
        disks=[
            current.model_copy(
                update={
                    "ssh_host_keys": [
                        registry_lib.HostKey(**k) for k in kings.manifest["ssh_host_keys"]
                    ]
                }
            )
        ]
    )
    impostor = registry_lib.known_hosts(other, {"relay-leeds": ("127.0.0.1", port)})
    verdicts: dict[str, str] = {}

    def reach() -> None:
        verdicts["registry"] = _host_key_verdict(port, trusted, tmp_path)
        verdicts["other relay's keys"] = _host_key_verdict(port, impostor, tmp_path)

    box = tmp_path / "tpm"  # the NUC's TPM2, to which its data volume is bound
    first = qemu.boot(
        disk, tmp_path, memory_mib=MEMORY_MIB, nic=_nic(port), while_up=reach,
        ready=qemu.FIRST_BOOT_DONE, tpm=box,
    )  # fmt: skip
    assert "relay-leeds login:" in first.console
    assert verdicts == {"registry": "trusted", "other relay's keys": "bad host key"}, verdicts

    root = audit.RootFs(disk, tmp_path / "r1")
    machine_id = (root.read("/etc/machine-id") or b"").decode().strip()
    runs = (root.read("/var/lib/xnat-fleet/first-boot.runs") or b"").decode().splitlines()
    pub = (root.read("/etc/ssh/ssh_host_ed25519_key.pub") or b"").decode()
    root.close()
    assert len(machine_id) == 32 and machine_id != leeds.manifest["machine_id"]
    assert [r.split(" ", 1)[1] for r in runs] == ["started", "done"], runs
    assert pub.split()[1] == next(
        k["key"] for k in leeds.manifest["ssh_host_keys"] if k["type"] == "ssh-ed25519"
    )
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    data = disk_lib.partition(disk, "relay-data")  # the storage role's data partition
    assert part.size > leeds.manifest["size_bytes"] - (300 << 20)  # the root grew
    assert data.offset >= part.offset + part.size
    assert data.offset + data.size > DISK_BYTES - (64 << 20)  # the data takes the rest

    second = qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB, nic=_nic(_free_port()), tpm=box)
    assert "relay-leeds login:" in second.console
    root = audit.RootFs(disk, tmp_path / "r2")
    again = (root.read("/var/lib/xnat-fleet/first-boot.runs") or b"").decode().splitlines()
    same_id = (root.read("/etc/machine-id") or b"").decode().strip()
    root.close()
    assert again == runs and same_id == machine_id  # the first boot did not run again


def test_a_first_boot_cut_off_half_way_completes_on_the_next(
    clones: dict[str, clone_lib.CloneResult], tmp_path: Path
) -> None:
    leeds = clones["relay-leeds"]
    disk = tmp_path / "cut-disk.raw"
    _write(leeds, disk)
    part = disk_lib.partition(disk, clone_lib.ROOT_PARTITION)
    with disk_lib.mounted(disk, part, tmp_path / "m", read_only=False) as root:
        (root / "etc/xnat-fleet/first-boot-cut").write_text("storage")
    box = tmp_path / "tpm"
    qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB, powers_off=True, tpm=box)
    root_fs = audit.RootFs(disk, tmp_path / "r1")
    cut = (root_fs.read("/var/lib/xnat-fleet/first-boot.runs") or b"").decode().splitlines()
    uncommitted = (root_fs.read("/etc/machine-id") or b"").decode().strip()
    root_fs.close()
    assert [r.split(" ", 1)[1] for r in cut] == ["started", "cut after storage"], cut
    assert uncommitted == "uninitialized"  # systemd never reached first-boot-complete.target

    boot = qemu.boot(disk, tmp_path, memory_mib=MEMORY_MIB, ready=qemu.FIRST_BOOT_DONE, tpm=box)
    assert "relay-leeds login:" in boot.console
    root_fs = audit.RootFs(disk, tmp_path / "r2")
    runs = (root_fs.read("/var/lib/xnat-fleet/first-boot.runs") or b"").decode().splitlines()
    committed = (root_fs.read("/etc/machine-id") or b"").decode().strip()
    root_fs.close()
    assert [r.split(" ", 1)[1] for r in runs] == [
        "started", "cut after storage", "started", "done",
    ], runs  # fmt: skip
    assert len(committed) == 32

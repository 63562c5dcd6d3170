"""A tiny root tree that looks like a relay's to the image stages (not bootable: the boot test
builds a real one)."""

from __future__ import annotations

import shutil
from pathlib import Path

from xnat_fleet.image import recipe

HOST_SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


def small_recipe(profile: str = "nuc") -> recipe.Recipe:
    """The shipped profile on a 192 MiB disk with a 64 MiB ESP (fast to assemble)."""
    r = recipe.load(profile)
    parts = [
        r.disk.partitions[0].model_copy(update={"size": "64MiB"}),
        *r.disk.partitions[1:],
    ]
    return r.model_copy(
        update={"disk": r.disk.model_copy(update={"size": "192MiB", "partitions": parts})}
    )


def tiny_tree(root: Path) -> Path:
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
    )
    (root / "etc" / "os-release").symlink_to("../usr/lib/os-release")
    (root / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc" / "hostname").write_text("build-host\n")
    (root / "boot").mkdir()
    (root / "boot" / "vmlinuz-6.1.0-test").write_bytes(b"kernel" * 1000)
    (root / "boot" / "initrd.img-6.1.0-test").write_bytes(b"initrd" * 1000)
    loader = root / "usr" / "lib" / "systemd" / "boot" / "efi" / "systemd-bootx64.efi"
    loader.parent.mkdir(parents=True)
    if HOST_SYSTEMD_BOOT.is_file():
        shutil.copy(HOST_SYSTEMD_BOOT, loader)
    else:
        loader.write_bytes(b"MZ" + b"\0" * 4094)
    (root / "var" / "log").mkdir(parents=True)
    (root / "home" / "admin").mkdir(parents=True)
    return root

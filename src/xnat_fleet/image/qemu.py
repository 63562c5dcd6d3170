"""Booting a disk image under QEMU with UEFI (OVMF), its serial console driven with pexpect.

QEMU runs with TCG (software emulation; KVM is not used, see docs/images.md), no network and no
display: the guest's first serial port is QEMU's stdio, read by pexpect; QEMU's monitor is a
UNIX socket, through which the boot ends with an ACPI power-button press, so the guest shuts
down cleanly and its journal is complete. UEFI variables live in a copy of OVMF's template
next to the image (one firmware state per disk, as on a real box).

A boot is successful when the console shows a login prompt (then ``settle`` seconds pass, so
that units starting beside the getty finish, before the power button is pressed); it fails on
a console prompt that waits for a keyboard (systemd-firstboot, an emergency shell, a
passphrase), a ``[FAILED]`` status line, or the timeout.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from xnat_fleet.errors import FleetError

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
LOGIN = re.compile(rb"\S+ login: ")
# What a clone's first boot prints on every console when it has finished (templates/image/).
FIRST_BOOT_DONE = re.compile(rb"xnat-fleet first boot: done")
# What a console shows when it waits for a person: a relay's first boot must show none of these.
PROMPTS = {
    "systemd-firstboot": re.compile(
        rb"Please (enter|choose|select) |-- Press any key to proceed --"
    ),
    "emergency shell": re.compile(rb"(emergency|rescue) mode|Give root password for maintenance"),
    "passphrase": re.compile(rb"Please enter passphrase"),
    "initramfs shell": re.compile(rb"\(initramfs\) "),
    "failed unit": re.compile(rb"\[FAILED\][^\r\n]*"),
}


@dataclass(frozen=True)
class Drive:
    """A disk on the guest's SCSI bus (virtio-scsi), as a box's SATA disks look to Linux: by
    serial number in /dev/disk/by-id, rotational (a hard disk) or not (an SSD)."""

    path: Path
    serial: str
    ssd: bool = False
    # bytes/s and I/O operations/s this disk is held to (a hard disk's speed; None: the host's)
    bps: int | None = None
    iops: int | None = None


class BootError(FleetError):
    """QEMU or OVMF is missing, or the guest did not boot to a login prompt."""


@dataclass
class Boot:
    seconds_to_login: float
    console: str  # the serial console up to the login prompt (and the shutdown)
    shutdown_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    seconds_to_ready: float = 0.0  # power-on to the ``ready`` line (0: none was asked for)


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else ""


def requirements(tpm: bool = False) -> list[str]:
    """What this machine lacks to boot images (empty when it can); ``tpm``: with a TPM2."""
    missing = []
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (Debian package qemu-system-x86)")
    if tpm and shutil.which("swtpm") is None:
        missing.append("swtpm (Debian package swtpm)")
    for f in (OVMF_CODE, OVMF_VARS):
        if not f.is_file():
            missing.append(f"{f} (Debian package ovmf)")
    return missing


def _monitor(sock: Path, command: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(str(sock))
                s.recv(4096)  # the banner
                s.sendall(command.encode() + b"\n")
                time.sleep(0.5)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def boot(
    image: Path,
    work: Path,
    timeout: float = 300.0,
    memory_mib: int = 1024,
    extra_disks: list[Path] | None = None,
    settle: float = 10.0,
    nic: str | None = None,
    while_up: Callable[[], None] | None = None,
    powers_off: bool = False,
    ready: re.Pattern[bytes] | None = None,
    tpm: Path | None = None,
    failed_units: bool = False,
    drives: list[Drive] | None = None,
    serial: int = 0,
    fw_cfg: dict[str, str] | None = None,
    console_log: Path | None = None,
) -> Boot:
    """Boot ``image`` to its login prompt, then power it off; what the console showed.

    ``nic``: a QEMU ``-nic`` value (e.g. user networking with a host forward) instead of none.
    ``while_up`` runs once the login prompt is there and units have settled, before the power
    button (tests reach the guest over ``nic`` then). ``powers_off``: the guest is expected to
    power itself off (a first boot cut off on purpose). ``ready``: after the login prompt, also
    wait for this console line (e.g. :data:`FIRST_BOOT_DONE`) before the units settle.
    ``tpm``: the state directory of a TPM2 (swtpm) for the guest: the same directory is the same
    box's TPM at every boot, another one is another box. ``failed_units``: a ``[FAILED]`` line
    is expected (e.g. a data volume that must not open on another box) and does not fail the
    boot; the console still shows it. ``drives``: the box's disks on a SCSI bus instead of
    ``image`` on virtio (``image`` then only names the box: its UEFI variables, its monitor);
    the firmware boots the first one it can. ``serial``: the UART the guest's console is on
    (the Supermicro's BMC is on the second, ttyS1). ``fw_cfg``: strings the guest reads under
    /sys/firmware/qemu_fw_cfg/by_name/ (switches for test probes). ``console_log``: the console
    is also written to this file as it comes (to follow a long boot, or read a failed one)."""
    missing = requirements(tpm=tpm is not None)
    if missing:
        raise BootError("cannot boot images here, missing: " + ", ".join(missing))
    work.mkdir(parents=True, exist_ok=True)
    variables = work / f"{image.name}.OVMF_VARS.fd"
    if not variables.exists():
        shutil.copyfile(OVMF_VARS, variables)
    monitor = work / f"{image.name}.monitor"
    monitor.unlink(missing_ok=True)
    args = [
        "-machine", "q35", "-accel", "tcg", "-m", str(memory_mib), "-smp", "2",
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={variables}",
        "-nic", nic or "none", "-display", "none",
        *(["-serial", "null"] * serial), "-serial", "stdio",
        "-monitor", f"unix:{monitor},server,nowait",
    ]  # fmt: skip
    if drives is None:
        args += ["-drive", f"file={image},format=raw,if=virtio"]
    else:
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
        for n, d in enumerate(drives):
            limits = (f",throttling.bps-total={d.bps}" if d.bps else "") + (
                f",throttling.iops-total={d.iops}" if d.iops else ""
            )
            # zeros written become holes: a resyncing mirror does not fill the host's disk
            args += [
                "-drive", f"file={d.path},format=raw,if=none,id=d{n},discard=unmap,"
                f"detect-zeroes=unmap{limits}",
                "-device", f"scsi-hd,drive=d{n},bus=scsi0.0,serial={d.serial},"
                f"rotation_rate={1 if d.ssd else 7200},bootindex={n + 1}",
            ]  # fmt: skip
    for name, value in (fw_cfg or {}).items():
        args += ["-fw_cfg", f"name=opt/{name},string={value.replace(',', ',,')}"]  # QEMU's escape
    for disk in extra_disks or []:
        args += ["-drive", f"file={disk},format=raw,if=virtio"]
    swtpm = None
    if tpm is not None:
        swtpm, sock = _start_swtpm(tpm, work / f"{image.name}.swtpm")
        args += [
            "-chardev", f"socket,id=chrtpm,path={sock}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        ]  # fmt: skip
    prompts = {k: v for k, v in PROMPTS.items() if not (failed_units and k == "failed unit")}
    child = pexpect.spawn("qemu-system-x86_64", args, timeout=timeout, maxread=65536)
    log = console_log.open("ab") if console_log is not None else None
    child.logfile_read = log
    started = time.monotonic()
    try:
        if powers_off:
            # the login prompt may come first (getty does not wait for the first boot)
            which = child.expect([pexpect.EOF, pexpect.TIMEOUT])
            console = _text(child.before)
            if which != 0:
                raise BootError(f"{image.name}: did not power off; console:\n{console[-3000:]}")
            return Boot(time.monotonic() - started, console)
        patterns: list[Any] = [LOGIN, *prompts.values(), pexpect.EOF, pexpect.TIMEOUT]
        which = child.expect(patterns)
        console = _text(child.before) + _text(child.after)
        if which != 0:
            names = ["login", *prompts]
            reason = (
                names[which]
                if which < len(names)
                else (
                    "QEMU exited" if which == len(names) else f"no login prompt in {timeout:.0f} s"
                )
            )
            raise BootError(f"{image.name}: {reason}; console:\n{console[-3000:]}")
        result = Boot(time.monotonic() - started, console)
        if ready is not None and not ready.search(console.encode(errors="replace")):
            if child.expect([ready, pexpect.EOF, pexpect.TIMEOUT]) != 0:
                raise BootError(
                    f"{image.name}: no {ready.pattern!r} on the console; console:\n"
                    + (console + _text(child.before))[-3000:]
                )
            result.console += _text(child.before) + _text(child.after)
        if ready is not None:
            result.seconds_to_ready = time.monotonic() - started
        # Units that start beside the getty (sshd, timers) finish before the power button.
        child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=settle)
        result.console += _text(child.before)
        if while_up is not None:
            while_up()
        down = time.monotonic()
        _monitor(monitor, "system_powerdown")
        child.expect(pexpect.EOF, timeout=120)
        result.console += _text(child.before)
        result.shutdown_seconds = time.monotonic() - down
        return result
    finally:
        if child.isalive():
            child.terminate(force=True)
        monitor.unlink(missing_ok=True)
        if swtpm is not None:
            _stop(swtpm)
        if log is not None:
            log.close()


def _start_swtpm(state: Path, base: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A TPM2 emulator on a UNIX socket, its state in STATE (made on first use)."""
    state.mkdir(parents=True, exist_ok=True)
    sock = base.with_name(base.name + ".sock")
    sock.unlink(missing_ok=True)
    log = base.with_name(base.name + ".log")
    proc = subprocess.Popen(  # noqa: S603 (argv list)
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",  # noqa: S607
         "--ctrl", f"type=unixio,path={sock}", "--terminate", "--log", f"file={log}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            _stop(proc)
            raise BootError(f"swtpm did not start for {state}: {err.strip()}")
        time.sleep(0.05)
    return proc, sock


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()

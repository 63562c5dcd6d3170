"""Enrol a local systemd container for SSH, the way real hosts are reached.

The lab and the molecule scenarios reach their containers over SSH (key login, sudo, the
hardened sshd of the base role), not through ``podman exec``, so every converge exercises the
transport real relays get. A fresh container from the base image has sshd but no account to log
in with: this first step, over ``podman exec`` (the one channel that needs no trust on first
use), creates the admin account with its public key and passwordless sudo (what a site's
installer leaves on a real host), makes sure the container has its own host keys (the image
ships none: every container generates its own at first boot), and reads the container's
Ed25519 host key into a known_hosts file. Ansible then connects with
``StrictHostKeyChecking=yes`` against that file: a key that changes is refused.

CLI (used by molecule/shared/create.yml)::

    python -m xnat_fleet.container_ssh enroll CONTAINER --address IP --user NAME \
        --public-key-file KEY.pub --known-hosts FILE [--port 22]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xnat_fleet.errors import FleetError
from xnat_fleet.paths import project_root

# Login names the enrolment accepts (what useradd accepts, without the odd corners).
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SUDOERS_FILE = "/etc/sudoers.d/00-xnat-fleet-enrolled"


def containers_conf() -> str:
    """The podman settings this project's containers need (runc, lowered ulimits: see
    molecule/shared/containers.conf), unless $CONTAINERS_CONF names others."""
    return os.environ.get(
        "CONTAINERS_CONF", str(project_root() / "molecule/shared/containers.conf")
    )


def podman(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise FleetError("podman is not installed (run `make bootstrap`)")
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", containers_conf())
    return subprocess.run(  # noqa: S603
        ["podman", *args],  # noqa: S607
        input=stdin, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def podman_checked(
    *args: str, stdin: str | None = None, error: type[FleetError] = FleetError
) -> subprocess.CompletedProcess[str]:
    """``podman`` that raises ERROR (naming the subcommand and podman's message) on failure."""
    proc = podman(*args, stdin=stdin)
    if proc.returncode != 0:
        raise error(f"podman {args[0]} {args[1] if len(args) > 1 else ''}: {proc.stderr.strip()}")
    return proc


def wait_booted(
    container: str, timeout: float = 120.0, error: type[FleetError] = FleetError
) -> str:
    """Wait until CONTAINER's systemd has booted (running or degraded); its state.

    ``systemctl is-system-running --wait`` fails at once ("Failed to connect to bus") while PID 1
    has not yet opened its bus, so it is asked again until it answers with a state."""
    deadline = time.monotonic() + timeout
    while True:
        proc = podman("exec", container, "systemctl", "is-system-running", "--wait")
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        if time.monotonic() > deadline:
            raise error(
                f"container {container} did not finish booting in {timeout:.0f} s "
                f"({state or proc.stderr.strip()})"
            )
        time.sleep(0.5)


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    """One known_hosts line (``[addr]:port`` when the port is not 22)."""
    name = address if port == 22 else f"[{address}]:{port}"
    key_type, key = host_key.split()[:2]
    return f"{name} {key_type} {key}"


def record_host_key(known_hosts: Path, address: str, port: int, host_key: str) -> None:
    """Replace whatever the file said of ADDRESS:PORT with HOST_KEY (a new container there)."""
    line = known_hosts_line(address, port, host_key)
    name = line.split()[0]
    kept = []
    if known_hosts.exists():
        kept = [x for x in known_hosts.read_text().splitlines() if x.split()[:1] != [name]]
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("\n".join([*kept, line]) + "\n")
    known_hosts.chmod(0o600)


def enrollment_script(user: str, public_key: str, port: int) -> str:
    """The shell run inside the container (as root, over podman exec)."""
    if not _USER.match(user):
        raise FleetError(f"enrolment: {user!r} is not a valid login name")
    if not re.match(
        r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$", public_key
    ):
        raise FleetError("enrolment: the public key is not one OpenSSH line")
    home = f"/home/{user}"
    lines = [
        "set -eu",
        f"id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}",
        f"install -d -m 0700 -o {user} -g {user} {home}/.ssh",
        # The key comes on stdin: no quoting of key comments through the shell.
        f"cat > {home}/.ssh/authorized_keys",
        f"chown {user}:{user} {home}/.ssh/authorized_keys",
        f"chmod 0600 {home}/.ssh/authorized_keys",
        f"printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\\n' {user} > {SUDOERS_FILE}.new",
        f"chmod 0440 {SUDOERS_FILE}.new",
        f"visudo -cqf {SUDOERS_FILE}.new",
        f"mv {SUDOERS_FILE}.new {SUDOERS_FILE}",
        # The image ships no host keys; its first boot creates them (ssh-keygen -A). Again
        # here for a container started from an older image.
        "test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -A",
    ]
    if port != 22:
        # The study's SSH port, as a host installed for the study already listens on it.
        lines.append(
            f"printf 'Port {port}\\n' > /etc/ssh/sshd_config.d/50-xnat-fleet-enrolled.conf"
        )
    lines += [
        "systemctl enable --quiet ssh",
        "systemctl restart ssh",
        "cat /etc/ssh/ssh_host_ed25519_key.pub",
    ]
    return "\n".join(lines)


def enroll(
    container: str,
    address: str,
    user: str,
    public_key: str,
    known_hosts: Path,
    port: int = 22,
) -> str:
    """Enrol CONTAINER and record its host key; returns the known_hosts line written."""
    podman("exec", container, "systemctl", "is-system-running", "--wait")  # degraded is fine
    script = enrollment_script(user, public_key.strip(), port)
    proc = podman("exec", "-i", container, "sh", "-c", script, stdin=public_key.strip() + "\n")
    if proc.returncode != 0:
        raise FleetError(
            f"enrolling container {container} for SSH failed: {proc.stderr.strip() or proc.stdout}"
        )
    host_key = proc.stdout.strip().splitlines()[-1]
    if not host_key.startswith("ssh-ed25519 "):
        raise FleetError(f"container {container} did not give an Ed25519 host key: {host_key!r}")
    record_host_key(known_hosts, address, port, host_key)
    return known_hosts_line(address, port, host_key)


def ssh_common_args(known_hosts: Path) -> str:
    """ssh options for Ansible: checked host keys from KNOWN_HOSTS, nothing else trusted."""
    return " ".join(
        shlex.quote(o)
        for o in (
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "ControlMaster=auto",
            "-o", "ControlPersist=120s",
            "-o", "ServerAliveInterval=15",
        )
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnat_fleet.container_ssh")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enroll", help="create the admin account and record the host key")
    e.add_argument("container")
    e.add_argument("--address", required=True)
    e.add_argument("--user", required=True)
    e.add_argument("--public-key-file", required=True, type=Path)
    e.add_argument("--known-hosts", required=True, type=Path)
    e.add_argument("--port", type=int, default=22)
    args = parser.parse_args(argv)
    try:
        line = enroll(
            args.container, args.address, args.user,
            args.public_key_file.read_text(), args.known_hosts, args.port,
        )  # fmt: skip
    except (FleetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

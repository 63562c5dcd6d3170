"""The relay registry: records appended and read back, the newest per relay trusted, errors with
file and line, and a known_hosts file that OpenSSH's own client accepts for a server holding the
registered key and refuses for any other (a real SSH handshake against a paramiko server)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from tests.conftest import ScratchInventory
from xnat_fleet.cli import cli
from xnat_fleet.image import registry

MANIFEST = {"image_id": "prism-relay-nuc", "image_version": "1", "xnat_version": "1.9.3.6"}


def _key() -> tuple[paramiko.Ed25519Key | paramiko.RSAKey, registry.HostKey]:
    key = paramiko.RSAKey.generate(2048)
    return key, registry.HostKey(type=key.get_name(), key=key.get_base64())


def _record(relay: str, key: registry.HostKey, version: str = "1") -> registry.Record:
    return registry.new_record(
        relay=relay, site=relay.upper(), manifest={**MANIFEST, "image_version": version},
        image_sha256="a" * 64, host_keys=[key],
        device=registry.Device(path="/dev/sdz", model="SSD 120", serial="S123"),
        operator="tester",
    )  # fmt: skip


def test_records_are_appended_and_the_newest_per_relay_is_current(tmp_path: Path) -> None:
    path = tmp_path / registry.FILE_NAME
    _, k1 = _key()
    _, k2 = _key()
    _, k3 = _key()
    registry.append(path, _record("relay-kings", k1, "1"))
    registry.append(path, _record("relay-leeds", k2, "1"))
    registry.append(path, _record("relay-kings", k3, "2"))  # re-imaged
    text = path.read_text()
    assert text.startswith("# xnat-fleet relay registry")
    reg = registry.load(path)
    assert [r.relay for r in reg.disks] == ["relay-kings", "relay-leeds", "relay-kings"]
    current = reg.current()
    assert current["relay-kings"].image_version == "2"
    assert current["relay-kings"].ssh_host_keys == [k3]
    # OpenSSH's fingerprint of the same key
    pub = tmp_path / "k3.pub"
    pub.write_text(f"{k3.type} {k3.key}\n")
    said = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True)
    assert k3.fingerprint in said.stdout


def test_a_broken_registry_names_file_line_or_field(tmp_path: Path) -> None:
    path = tmp_path / registry.FILE_NAME
    path.write_text("format: 1\ndisks:\n  - relay: [\n")
    with pytest.raises(registry.RegistryError, match=r"relay-registry\.yml:\d+:\d+: YAML syntax"):
        registry.load(path)
    _, k = _key()
    registry.append(path.with_name("ok.yml"), _record("relay-kings", k))
    bad = (tmp_path / "ok.yml").read_text().replace("a" * 64, "not-a-checksum")
    path.write_text(bad)
    with pytest.raises(registry.RegistryError, match=r"disks\.0\.image_sha256"):
        registry.load(path)


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


@pytest.fixture
def ssh_server() -> Iterator[tuple[int, paramiko.RSAKey]]:
    """A paramiko SSH server on loopback with its own host key (accepts no login)."""
    key = paramiko.RSAKey.generate(2048)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(key)
            try:
                t.start_server(server=_Server())
                t.accept(timeout=5)
            except (paramiko.SSHException, EOFError, OSError):
                pass
            finally:
                t.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], key
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _ssh(port: int, known: Path, tmp_path: Path) -> str:
    identity = tmp_path / "id"
    if not identity.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True
        )
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(port), "-i", str(identity),
         "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         "fleetadmin@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.stderr


def test_known_hosts_from_the_registry_is_what_openssh_trusts(
    scratch: ScratchInventory, tmp_path: Path, ssh_server: tuple[int, paramiko.RSAKey]
) -> None:
    port, server_key = ssh_server
    hosts = scratch.load("hosts.yml")
    hosts["all"]["children"]["relays"]["hosts"]["relay-kings"]["ansible_host"] = "127.0.0.1"
    scratch.dump("hosts.yml", hosts)
    scratch.set("host_vars/relay-kings/site.yml", "fleet_ssh_port", port)
    path = registry.path_for(scratch.path)
    registry.append(
        path, _record("relay-kings", registry.HostKey(type="ssh-rsa", key=server_key.get_base64()))
    )
    known = tmp_path / "known_hosts"
    runner = CliRunner()
    out = runner.invoke(cli, ["fleet", "known-hosts", "-i", str(scratch.path), "-o", str(known)])
    assert out.exit_code == 0, out.output
    assert "no registered disk (so no trusted key) for: relay-leeds" in out.output
    assert known.read_text().startswith(f"[127.0.0.1]:{port},[relay-kings]:{port} ssh-rsa ")
    said = _ssh(port, known, tmp_path)
    # The host key was accepted; only the login (no account on the stand-in server) failed.
    assert "Permission denied" in said and "Host key verification failed" not in said, said
    # A relay whose disk was re-imaged with other keys: the old key is no longer trusted.
    _, other = _key()
    registry.append(path, _record("relay-kings", other, "2"))
    out = runner.invoke(cli, ["fleet", "known-hosts", "-i", str(scratch.path), "-o", str(known)])
    assert out.exit_code == 0
    said = _ssh(port, known, tmp_path)
    assert "Host key verification failed" in said, said
    listing = runner.invoke(cli, ["image", "registry", "-i", str(scratch.path), "--json"])
    doc = json.loads(listing.output)
    assert [d["current"] for d in doc["disks"]] == [False, True]
    assert doc["disks"][1]["fingerprints"] == [other.fingerprint]

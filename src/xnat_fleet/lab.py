"""The lab: an inventory's hosts as local systemd containers (podman), for demos and trials.

The inventory stays written for real hosts reached over SSH. The lab adds an overlay inventory
(``.lab/<name>/lab.yml``) that points each host at its container through Ansible's podman
connection and admits the lab network where the study admits its admin networks. The overlay is
layered on top with a second ``-i``; the inventory itself is never edited.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Fleet, Host
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root

IMAGE = "localhost/xnat-fleet-base:bookworm"
NETWORK = "xf-lab"
SUBNET = ipaddress.ip_network("10.89.50.0/24")
FIRST_HOST = 10
LAB_ADMIN = "labadmin"
# XNAT itself cannot be downloaded here: the lab's XNAT REST API is the tests' stand-in
# (tests/xnat_standin), one process per host on the controller's loopback, clearly labelled.
STANDIN_BASE_PORT = 18480


@dataclass(frozen=True)
class LabHost:
    name: str
    container: str
    address: str


def lab_dir(source: InventorySource) -> Path:
    return project_root() / ".lab" / source.directory.resolve().name


def overlay_path(source: InventorySource) -> Path:
    return lab_dir(source) / "lab.yml"


def lab_hosts(fleet: Fleet) -> list[LabHost]:
    return [
        LabHost(h.name, f"xf-lab-{h.name}", str(SUBNET.network_address + FIRST_HOST + i))
        for i, h in enumerate(fleet.hosts)
    ]


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise FleetError("podman is not installed (run `make bootstrap`)")
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(project_root() / "molecule/shared/containers.conf"))
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=False)  # noqa: S603,S607
    if check and proc.returncode != 0:
        raise FleetError(
            f"podman {args[0]} {args[1] if len(args) > 1 else ''}: {proc.stderr.strip()}"
        )
    return proc


def _lab_key(directory: Path) -> str:
    """The lab admin's key pair (created once): its public key in OpenSSH form."""
    private = directory / "id_ed25519"
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        private.chmod(0o600)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        (directory / "id_ed25519.pub").write_text(public.decode() + " xnat-fleet-lab\n")
    return (directory / "id_ed25519.pub").read_text().strip()


# Manifest entries that are not plugins: the web application, Tomcat and the Java archive.
FIXED = ("web", "tomcat", "jre")
JRE_FILE = "OpenJDK17U-jre_x64_linux_fixture.tar.gz"


def stage_standins(fleet: Fleet, directory: Path) -> dict[str, Any]:
    """Build the tests' stand-in artifacts into the lab's own store (XNAT cannot be downloaded).

    NOT XNAT: a static web application in place of XNAT's WAR, small jars in place of its
    plugins, a Tomcat 9 archive and a Java runtime archive assembled from Debian's files
    (tests/fixtures/). The lab's overlay points the roles at these instead of the inventory's
    pinned artifacts.
    """
    store = directory / "store"
    manifest_file = store / "manifest.json"
    plugins = sorted({p for h in fleet.hosts for p in h.config.fleet_plugins})
    fixtures = project_root() / "tests" / "fixtures"
    if manifest_file.is_file():
        manifest: dict[str, Any] = json.loads(manifest_file.read_text())
        if "jre" in manifest and sorted(k for k in manifest if k not in FIXED) == plugins:
            return manifest
    store.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(  # noqa: S603
        [sys.executable, str(fixtures / "standin_artifacts.py"), str(store), "--version", "lab",
         "--plugins", ",".join(plugins)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise FleetError(f"building the stand-in artifacts failed: {built.stderr.strip()}")
    manifest = json.loads(built.stdout)
    for key, script, name, version in (
        ("tomcat", "tomcat-archive.sh", "apache-tomcat-9.0.70.tar.gz", "9.0.70"),
        ("jre", "jre-archive.sh", JRE_FILE, "17"),
    ):
        # Each script prints the archive's sha256 as its last line (progress on stderr).
        made = subprocess.run(  # noqa: S603
            ["bash", str(fixtures / script), str(store)],  # noqa: S607
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise FleetError(f"building the stand-in {key} archive failed: {made.stderr.strip()}")
        manifest[key] = {
            "file": name,
            "version": version,
            "sha256": made.stdout.strip().splitlines()[-1],
        }
    manifest_file.write_text(json.dumps(manifest, indent=2))
    return manifest


def _standin_inputs(host: Host, store: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Role inputs that swap the inventory's pinned artifacts for the stand-ins."""
    return {
        # The pinned-archive path real hosts take (fleet_artifacts.jdk), with an archive of the
        # upstream shape assembled from Debian's Java 17 (tests/fixtures/jre-archive.sh).
        "java_source": "archive",
        "java_major": 17,
        "java_archive_src": str(store / manifest["jre"]["file"]),
        "java_archive_sha256": manifest["jre"]["sha256"],
        "tomcat_version": manifest["tomcat"]["version"],
        "tomcat_archive_src": str(store / manifest["tomcat"]["file"]),
        "tomcat_archive_sha256": manifest["tomcat"]["sha256"],
        "tomcat_heap_min": "256m",
        "tomcat_heap_max": "1g",
        "xnat_war_src": str(store / manifest["web"]["file"]),
        "xnat_war_sha256": manifest["web"]["sha256"],
        "xnat_plugins": [
            {"name": p, "src": str(store / manifest[p]["file"]), "sha256": manifest[p]["sha256"]}
            for p in host.config.fleet_plugins
        ],
    }


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/", timeout=1):  # noqa: S310  # loopback http
            return True
    except OSError:
        return False


def standin_urls(fleet: Fleet, base_port: int = STANDIN_BASE_PORT) -> dict[str, str]:
    return {h.name: f"http://127.0.0.1:{base_port + i}" for i, h in enumerate(fleet.hosts)}


def start_xnat_standins(
    fleet: Fleet, directory: Path, base_port: int = STANDIN_BASE_PORT
) -> dict[str, str]:
    """Start (or keep) one XNAT REST stand-in process per host; host -> URL."""
    urls = standin_urls(fleet, base_port)
    for host in fleet.hosts:
        pid_file = directory / f"xnat-standin-{host.name}.pid"
        if _alive(pid_file):
            continue
        url = urls[host.name]
        args = [
            sys.executable, "-m", "tests.xnat_standin",
            "--port", url.rsplit(":", 1)[1], "--version", host.config.fleet_xnat.version,
            "--name", host.name,
        ]  # fmt: skip
        if "xsync" in host.config.fleet_plugins:
            args.append("--xsync")
        with (directory / f"xnat-standin-{host.name}.log").open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603  # our own interpreter and module
                args,
                cwd=project_root(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
    for url in urls.values():
        deadline = time.monotonic() + 60  # three interpreters starting on a busy machine
        while time.monotonic() < deadline:
            if _answers(url):
                break
            time.sleep(0.2)
        else:
            stop_xnat_standins(directory)  # leave no half-started set behind
            raise FleetError(f"the XNAT REST stand-in at {url} did not start (see {directory})")
    return urls


def stop_xnat_standins(directory: Path) -> None:
    for pid_file in directory.glob("xnat-standin-*.pid"):
        if _alive(pid_file):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()


def overlay(
    fleet: Fleet,
    public_key: str,
    store: Path | None = None,
    manifest: dict[str, Any] | None = None,
    xnat_urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The overlay inventory: podman connection per host, lab network admitted for SSH, and
    (with a stand-in manifest) the stand-in artifacts in place of the pinned ones."""
    lab_admin = {"name": LAB_ADMIN, "comment": "xnat-fleet lab", "ssh_keys": [public_key]}
    by_name = {h.name: h for h in fleet.hosts}
    hosts: dict[str, Any] = {}
    for lab_host in lab_hosts(fleet):
        standins = (
            _standin_inputs(by_name[lab_host.name], store, manifest)
            if store is not None and manifest is not None
            else {}
        )
        hosts[lab_host.name] = standins | {
            "ansible_connection": "containers.podman.podman",
            "ansible_host": lab_host.container,
            "ansible_python_interpreter": "/usr/bin/python3",
            # The lab network is an admin network, and the lab admin a study admin, so that
            # `ssh labadmin@ADDRESS` works from this machine.
            "firewall_ssh_sources": f"{{{{ fleet_networks.admin + ['{SUBNET}'] }}}}",
            "base_admin_users": f"{{{{ fleet_admins + [{json.dumps(lab_admin)}] }}}}",
            # A container may not set the clock (no CAP_SYS_TIME): chrony only measures.
            "base_chrony_set_clock": False,
        }
        if xnat_urls:
            hosts[lab_host.name]["fleet_xnat_url"] = xnat_urls[lab_host.name]
    return {"all": {"hosts": hosts}}


def up(fleet: Fleet, source: InventorySource) -> list[LabHost]:
    """Start (or keep) one container per host and write the overlay inventory."""
    directory = lab_dir(source)
    directory.mkdir(parents=True, exist_ok=True)
    if _podman("network", "exists", NETWORK, check=False).returncode != 0:
        _podman("network", "create", "--subnet", str(SUBNET), NETWORK)
    if _podman("image", "exists", IMAGE, check=False).returncode != 0:
        raise FleetError(f"image {IMAGE} is missing (run `make bootstrap`)")
    hosts = lab_hosts(fleet)
    for h in hosts:
        if _podman("container", "exists", h.container, check=False).returncode != 0:
            _podman(
                "run", "-d", "--name", h.container, "--hostname", h.name,
                "--network", NETWORK, "--ip", h.address, "--systemd=always",
                "--cap-add", "NET_ADMIN", "--label", "xnat-fleet.lab=1",
                IMAGE, "/sbin/init",
            )  # fmt: skip
        else:
            _podman("start", h.container)
    for h in hosts:
        _podman("exec", h.container, "systemctl", "is-system-running", "--wait", check=False)
    manifest = stage_standins(fleet, directory)
    urls = start_xnat_standins(fleet, directory)
    document = overlay(fleet, _lab_key(directory), directory / "store", manifest, urls)
    overlay_path(source).write_text(
        "# Written by `xnat-fleet lab up`: the lab's connection settings layered over the\n"
        "# inventory. Do not edit; `xnat-fleet lab down` removes it.\n"
        + yaml.safe_dump(document, sort_keys=True)
    )
    return hosts


def down(fleet: Fleet, source: InventorySource) -> None:
    for h in lab_hosts(fleet):
        _podman("rm", "-f", "--ignore", h.container)
    _podman("network", "rm", "-f", NETWORK, check=False)
    stop_xnat_standins(lab_dir(source))
    shutil.rmtree(lab_dir(source), ignore_errors=True)


def status(fleet: Fleet) -> dict[str, str]:
    """container -> state (running, exited, missing)."""
    out: dict[str, str] = {}
    for h in lab_hosts(fleet):
        proc = _podman("inspect", "--format", "{{.State.Status}}", h.container, check=False)
        out[h.name] = proc.stdout.strip() if proc.returncode == 0 else "missing"
    return out

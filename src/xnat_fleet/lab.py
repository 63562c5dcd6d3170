"""The lab: an inventory's hosts as local systemd containers (podman), for demos and trials.

The inventory stays written for real hosts reached over SSH. The lab adds an overlay inventory
(``.lab/<lab id>/lab.yml``) that points each host at its container and admits the lab network
where the study admits its admin networks. The overlay is layered on top with a second ``-i``;
the inventory itself is never edited.

Containers are reached the way real hosts are: each one is enrolled over ``podman exec`` (the one
channel that needs no trust on first use: an admin account with the lab's key and sudo, and the
container's own host key recorded in the lab's known_hosts; src/xnat_fleet/container_ssh.py),
and Ansible then logs in over SSH with ``StrictHostKeyChecking=yes`` against that file and
becomes root with sudo. ``lab up --connection podman`` keeps the older podman connection for
comparison.

Every inventory gets its own lab: a lab id derived from the inventory directory's resolved path
(``<slug of its name>-<6 hex of a hash of the path>``) names the containers
(``xf-<lab id>-<host>``), the network (``xf-<lab id>``) and the lab directory, which keeps the
key, the known_hosts, the overlay and the lab's state (``state.json``: subnet, addresses,
stand-in ports, connection). A lab's subnet is the first /24 of ``LAB_POOL`` that no other podman
network (and no other lab's state) uses, its stand-in ports the first free ones from
``STANDIN_BASE_PORT``; both are kept in the state so they never move, and a host added to the
inventory gets the next free address and port.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xnat_fleet import container_ssh
from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Fleet
from xnat_fleet.model.loader import InventorySource, LoadedInventory
from xnat_fleet.paths import project_root

IMAGE = "localhost/xnat-fleet-base:bookworm"
# Labs take /24s of this range (10.89.64.0 - 10.89.127.255): clear of podman's default network
# (10.88.0.0/16) and of the molecule scenarios' fixed subnets (10.89.1x.0/24).
LAB_POOL = ipaddress.IPv4Network("10.89.64.0/18")
FIRST_HOST = 10
LAB_ADMIN = "labadmin"
CONNECTIONS = ("ssh", "podman")
# XNAT itself cannot be downloaded here: the lab's XNAT REST API is the tests' stand-in
# (tests/xnat_standin), one process per host on the controller's loopback, clearly labelled.
STANDIN_BASE_PORT = 18480
STANDIN_PORTS = range(STANDIN_BASE_PORT, STANDIN_BASE_PORT + 1000)
APT_CACHE_PORT = 3142
APT_PROXY_FILE = "/etc/apt/apt.conf.d/00xnat-fleet-lab-proxy"
LABEL = "xnat-fleet.lab"
LABEL_ID = "xnat-fleet.lab-id"
LABEL_INVENTORY = "xnat-fleet.inventory"
STATE_FILE = "state.json"
SLUG_LENGTH = 20


@dataclass(frozen=True)
class LabHost:
    name: str
    container: str
    address: str


@dataclass
class LabState:
    """What ``lab up`` allocated for one inventory's lab (``.lab/<lab id>/state.json``)."""

    lab_id: str
    inventory: str  # the inventory directory, resolved
    subnet: str
    addresses: dict[str, str] = field(default_factory=dict)  # host -> address in the subnet
    standin_ports: dict[str, int] = field(default_factory=dict)  # host -> stand-in port
    ssh_ports: dict[str, int] = field(default_factory=dict)  # host -> its sshd port
    connection: str = "ssh"
    apt_proxy: str | None = None  # what the containers' apt uses; None: no cache

    @property
    def network(self) -> str:
        return network_name(self.lab_id)

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def container(self, host: str) -> str:
        return container_name(self.lab_id, host)

    def describe(self) -> str:
        return f"lab {self.lab_id} (inventory {self.inventory})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        return cls(
            lab_id=str(data["lab_id"]),
            inventory=str(data["inventory"]),
            subnet=str(data["subnet"]),
            addresses={str(k): str(v) for k, v in data.get("addresses", {}).items()},
            standin_ports={str(k): int(v) for k, v in data.get("standin_ports", {}).items()},
            ssh_ports={str(k): int(v) for k, v in data.get("ssh_ports", {}).items()},
            connection=str(data.get("connection", "ssh")),
            apt_proxy=data.get("apt_proxy"),
        )


# -- names ------------------------------------------------------------------------------------


def lab_id(directory: Path) -> str:
    """``<slug of the directory name>-<6 hex>``: the hash of the resolved path tells two
    inventories with the same directory name apart."""
    resolved = directory.resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", resolved.name.lower()).strip("-")[:SLUG_LENGTH].strip("-")
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:6]
    return f"{slug or 'lab'}-{digest}"


def network_name(lab: str) -> str:
    return f"xf-{lab}"


def container_name(lab: str, host: str) -> str:
    return f"xf-{lab}-{host}"


def labs_root() -> Path:
    return project_root() / ".lab"


def lab_dir(source: InventorySource) -> Path:
    return labs_root() / lab_id(source.directory)


def overlay_path(source: InventorySource) -> Path:
    return lab_dir(source) / "lab.yml"


def known_hosts_path(directory: Path) -> Path:
    return directory / "known_hosts"


def key_path(directory: Path) -> Path:
    return directory / "id_ed25519"


# -- state and allocation (no podman) ---------------------------------------------------------


def load_state(directory: Path) -> LabState | None:
    f = directory / STATE_FILE
    if not f.is_file():
        return None
    try:
        return LabState.from_json(f.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"{f}: unreadable lab state ({exc}); `xnat-fleet lab down` it") from None


def save_state(directory: Path, state: LabState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".new")
    tmp.write_text(state.to_json())
    tmp.replace(directory / STATE_FILE)


def other_labs(own: str, root: Path | None = None) -> list[LabState]:
    """The states of every other lab of this checkout (unreadable ones are skipped)."""
    found: list[LabState] = []
    for f in sorted((root or labs_root()).glob(f"*/{STATE_FILE}")):
        if f.parent.name == own:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append(LabState.from_json(f.read_text()))
    return found


def allocate_subnet(
    used: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
    pool: ipaddress.IPv4Network = LAB_POOL,
) -> ipaddress.IPv4Network:
    """The first /24 of POOL that overlaps none of USED."""
    taken = [u for u in used if u.version == 4]
    for candidate in pool.subnets(new_prefix=24):
        if not any(candidate.overlaps(u) for u in taken):
            return candidate
    raise FleetError(
        f"no free /24 left in {pool} for a lab: remove labs you no longer need "
        "(`xnat-fleet lab down -i INVENTORY`)"
    )


def allocate_addresses(
    subnet: ipaddress.IPv4Network, hosts: Sequence[str], existing: Mapping[str, str]
) -> dict[str, str]:
    """Keep every address already given (also of hosts since removed: a container may still
    hold it); a new host gets the lowest free address from .FIRST_HOST."""
    addresses = {h: a for h, a in existing.items() if ipaddress.ip_address(a) in subnet}
    taken = set(addresses.values())
    free = (
        str(a)
        for a in subnet.hosts()
        if int(a) - int(subnet.network_address) >= FIRST_HOST and str(a) not in taken
    )
    for h in hosts:
        if h not in addresses:
            try:
                addresses[h] = next(free)
            except StopIteration:
                raise FleetError(f"the lab subnet {subnet} has no address left for {h}") from None
    return addresses


def allocate_ports(
    hosts: Sequence[str],
    existing: Mapping[str, int],
    unavailable: Callable[[int], bool],
    ports: range = STANDIN_PORTS,
) -> dict[str, int]:
    """Keep the ports already given; a new host gets the lowest port that is neither given
    nor UNAVAILABLE (another lab's, or bound by something)."""
    allocated = dict(existing)
    for h in hosts:
        if h in allocated:
            continue
        given = set(allocated.values())
        for p in ports:
            if p not in given and not unavailable(p):
                allocated[h] = p
                break
        else:
            raise FleetError(
                f"no free port in {ports.start}-{ports.stop - 1} for the XNAT stand-in of {h}"
            )
    return allocated


def plan_state(
    lab: str,
    inventory: Path,
    hosts: Sequence[str],
    previous: LabState | None,
    *,
    used_subnets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
    own_subnet: str | None = None,
    port_owners: Mapping[int, str] | None = None,
    port_in_use: Callable[[int], bool] = lambda port: False,
) -> LabState:
    """The lab's state after this ``lab up``: the previous one where it still holds, new
    addresses and ports for new hosts.

    ``own_subnet`` is the subnet of the lab's network when it exists (it wins); ``used_subnets``
    are those of every other network and lab, ``port_owners`` the ports of other labs.
    """
    used = list(used_subnets)
    subnet: ipaddress.IPv4Network | None = None
    if own_subnet is not None:
        subnet = ipaddress.IPv4Network(own_subnet)
    elif previous is not None:
        kept = ipaddress.IPv4Network(previous.subnet)
        if not any(kept.overlaps(u) for u in used if u.version == 4):
            subnet = kept
    if subnet is None:
        subnet = allocate_subnet(used)
    same_subnet = previous is not None and previous.subnet == str(subnet)
    owners = port_owners or {}
    return LabState(
        lab_id=lab,
        inventory=str(inventory.resolve()),
        subnet=str(subnet),
        addresses=allocate_addresses(
            subnet, hosts, previous.addresses if previous and same_subnet else {}
        ),
        standin_ports=allocate_ports(
            hosts,
            previous.standin_ports if previous else {},
            lambda p: p in owners or port_in_use(p),
        ),
        ssh_ports=dict(previous.ssh_ports) if previous else {},
        connection=previous.connection if previous else "ssh",
        apt_proxy=previous.apt_proxy if previous else None,
    )


def lab_hosts(fleet: Fleet, state: LabState) -> list[LabHost]:
    return [LabHost(h.name, state.container(h.name), state.addresses[h.name]) for h in fleet.hosts]


def ssh_ports(fleet: Fleet, inv: LoadedInventory | None = None) -> dict[str, int]:
    """Each host's sshd port as the base role will set it (``base_sshd_port``, mapped from
    ``fleet_ssh_port``; 22 by default)."""
    ports: dict[str, int] = {}
    for h in fleet.hosts:
        port: Any = h.config.fleet_ssh_port
        if inv is not None:
            port = inv.playbook_vars(h.name, ["base_sshd_port"]).get("base_sshd_port", port)
        ports[h.name] = int(port)
    return ports


def port_in_use(port: int) -> bool:
    """Something listens on 127.0.0.1:PORT (a socket in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_owners(labs: Iterable[LabState]) -> dict[int, str]:
    return {p: lab.describe() for lab in labs for p in lab.standin_ports.values()}


# -- podman -----------------------------------------------------------------------------------


def _podman(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    if check:
        return container_ssh.podman_checked(*args, stdin=stdin)
    return container_ssh.podman(*args, stdin=stdin)


def _networks() -> list[dict[str, Any]]:
    out = _podman("network", "ls", "--format", "json").stdout
    return list(json.loads(out or "[]"))


def _subnets(network: Mapping[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(s["subnet"], strict=False)
        for s in network.get("subnets") or []
        if s.get("subnet")
    ]


def _containers(label: str) -> list[dict[str, Any]]:
    out = _podman("ps", "-a", "--filter", f"label={label}", "--format", "json").stdout
    return list(json.loads(out or "[]"))


def _names(container: Mapping[str, Any]) -> list[str]:
    names = container.get("Names") or []
    return [names] if isinstance(names, str) else [str(n) for n in names]


def legacy_containers() -> list[str]:
    """Containers of a lab made before labs had ids (``xf-lab-<host>`` on network xf-lab)."""
    return sorted(
        n
        for c in _containers(f"{LABEL}=1")
        if LABEL_ID not in (c.get("Labels") or {})
        for n in _names(c)
    )


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """One ``lab up`` at a time allocates subnets and ports (of this checkout)."""
    labs_root().mkdir(parents=True, exist_ok=True)
    with (labs_root() / ".allocation.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _lab_key(directory: Path) -> str:
    """The lab admin's key pair (created once): its public key in OpenSSH form."""
    private = key_path(directory)
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


def stage_standins(fleet: Fleet, directory: Path, apt_proxy: str | None = None) -> dict[str, Any]:
    """Build the tests' stand-in artifacts into the lab's own store (XNAT cannot be downloaded).

    NOT XNAT: a static web application in place of XNAT's WAR, small jars in place of its
    plugins, a Tomcat 9 archive and a Java runtime archive assembled from Debian's files
    (tests/fixtures/). The lab's overlay points the roles at these instead of the inventory's
    pinned artifacts. ``apt_proxy`` (the machine's apt cache) is where the archive scripts
    fetch Debian's packages through.
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
    env = dict(os.environ)
    if apt_proxy:
        env["XNAT_FLEET_APT_PROXY"] = apt_proxy
    for key, script, name, version in (
        ("tomcat", "tomcat-archive.sh", "apache-tomcat-9.0.70.tar.gz", "9.0.70"),
        ("jre", "jre-archive.sh", JRE_FILE, "17"),
    ):
        # Each script prints the archive's sha256 as its last line (progress on stderr).
        made = subprocess.run(  # noqa: S603
            ["bash", str(fixtures / script), str(store)],  # noqa: S607
            capture_output=True, text=True, check=False, env=env,
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


def standin_inputs(plugins: Sequence[str], store: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Role inputs that swap the inventory's pinned artifacts for the stand-ins (the lab's and
    ``image build --standins``)."""
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
            for p in plugins
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


def standin_urls(ports: Mapping[str, int]) -> dict[str, str]:
    return {h: f"http://127.0.0.1:{p}" for h, p in ports.items()}


def start_xnat_standins(
    fleet: Fleet,
    directory: Path,
    ports: Mapping[str, int],
    owners: Mapping[int, str] | None = None,
) -> dict[str, str]:
    """Start (or keep) one XNAT REST stand-in process per host on its port; host -> URL.

    A port that something else holds is refused before anything starts, naming the lab whose
    port it is (``owners``) when it is another lab's.
    """
    urls = standin_urls({h.name: ports[h.name] for h in fleet.hosts})
    starting = [h for h in fleet.hosts if not _alive(directory / f"xnat-standin-{h.name}.pid")]
    for host in starting:
        port = ports[host.name]
        if port_in_use(port):
            holder = (owners or {}).get(port, "something that is not this lab's stand-in")
            raise FleetError(
                f"port {port} of the XNAT stand-in of {host.name} is taken by {holder}: "
                "stop that (`xnat-fleet lab down -i` its inventory) or free the port"
            )
    for host in starting:
        pid_file = directory / f"xnat-standin-{host.name}.pid"
        args = [
            sys.executable, "-m", "tests.xnat_standin",
            "--port", str(ports[host.name]), "--version", host.config.fleet_xnat.version,
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


def connection_vars(state: LabState, host: str, directory: Path) -> dict[str, Any]:
    """How Ansible reaches HOST's container: SSH as the lab admin with sudo and the lab's
    recorded host keys (the default), or the podman connection (``--connection podman``)."""
    if state.connection == "podman":
        return {
            "ansible_connection": "containers.podman.podman",
            "ansible_host": state.container(host),
        }
    return {
        "ansible_connection": "ssh",
        "ansible_host": state.addresses[host],
        "ansible_port": state.ssh_ports.get(host, 22),
        "ansible_user": LAB_ADMIN,
        "ansible_ssh_private_key_file": str(key_path(directory).resolve()),
        "ansible_ssh_common_args": container_ssh.ssh_common_args(
            known_hosts_path(directory).resolve()
        ),
        "ansible_become": True,
    }


def overlay(
    fleet: Fleet,
    state: LabState,
    public_key: str,
    directory: Path,
    store: Path | None = None,
    manifest: dict[str, Any] | None = None,
    xnat_urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The overlay inventory: how to reach each container, the lab network admitted for SSH,
    and (with a stand-in manifest) the stand-in artifacts in place of the pinned ones."""
    lab_admin = {"name": LAB_ADMIN, "comment": "xnat-fleet lab", "ssh_keys": [public_key]}
    hosts: dict[str, Any] = {}
    for host in fleet.hosts:
        standins = (
            standin_inputs(host.config.fleet_plugins, store, manifest)
            if store is not None and manifest is not None
            else {}
        )
        hosts[host.name] = (
            standins
            | connection_vars(state, host.name, directory)
            | {
                "ansible_python_interpreter": "/usr/bin/python3",
                # The lab network is an admin network, and the lab admin a study admin, so the
                # hardened sshd of the base role keeps letting the lab admin in from this machine.
                "firewall_ssh_sources": f"{{{{ fleet_networks.admin + ['{state.subnet}'] }}}}",
                "base_admin_users": f"{{{{ fleet_admins + [{json.dumps(lab_admin)}] }}}}",
                # A container may not set the clock (no CAP_SYS_TIME): chrony only measures.
                "base_chrony_set_clock": False,
            }
        )
        if xnat_urls:
            hosts[host.name]["fleet_xnat_url"] = xnat_urls[host.name]
    return {"all": {"hosts": hosts}}


# -- up, down, status -------------------------------------------------------------------------


def _ensure_network(state: LabState, networks: Sequence[Mapping[str, Any]]) -> None:
    mine = next((n for n in networks if n.get("name") == state.network), None)
    if mine is not None:
        return
    # Containers of this lab without their network cannot start again: they go.
    for c in _containers(f"{LABEL_ID}={state.lab_id}"):
        for name in _names(c):
            _podman("rm", "-f", "--ignore", name)
    _podman(
        "network", "create", "--subnet", state.subnet, "--gateway", state.gateway,
        "--label", f"{LABEL}=1", "--label", f"{LABEL_ID}={state.lab_id}",
        "--label", f"{LABEL_INVENTORY}={state.inventory}",
        state.network,
    )  # fmt: skip


def _ensure_container(state: LabState, host: LabHost) -> None:
    proc = _podman(
        "inspect", "--type", "container", "--format", "{{json .Config.Labels}}",
        host.container, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        _podman(
            "run", "-d", "--name", host.container, "--hostname", host.name,
            "--network", state.network, "--ip", host.address, "--systemd=always",
            "--cap-add", "NET_ADMIN",
            "--label", f"{LABEL}=1", "--label", f"{LABEL_ID}={state.lab_id}",
            "--label", f"{LABEL_INVENTORY}={state.inventory}",
            IMAGE, "/sbin/init",
        )  # fmt: skip
        return
    labels = json.loads(proc.stdout or "null") or {}
    if labels.get(LABEL_ID) != state.lab_id:
        raise FleetError(
            f"container {host.container} exists but is not of lab {state.lab_id} "
            f"(its labels: {labels}); remove it with `podman rm -f {host.container}`"
        )
    _podman("start", host.container)


def _set_apt_proxy(container: str, proxy: str | None) -> None:
    if proxy is None:
        _podman("exec", container, "rm", "-f", APT_PROXY_FILE)
        return
    _podman(
        "exec", "-i", container, "sh", "-c", f"cat > {APT_PROXY_FILE}",
        stdin=f'Acquire::http::Proxy "{proxy}";\n',
    )  # fmt: skip


def _apt_cache_port() -> int:
    """Start the machine's apt cache unless it runs (src/xnat_fleet/aptcache.py); its port."""
    try:
        from xnat_fleet import aptcache
    except ImportError as exc:  # pragma: no cover - aptcache ships with the package
        raise FleetError(f"the apt cache is not available ({exc}); use --no-apt-cache") from None
    url = aptcache.ensure(port=APT_CACHE_PORT)
    return urllib.parse.urlsplit(url).port or APT_CACHE_PORT


def up(
    fleet: Fleet,
    source: InventorySource,
    *,
    connection: str = "ssh",
    apt_cache: bool = True,
    sshd_ports: Mapping[str, int] | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> LabState:
    """Start (or keep) one container per host, enrol each for SSH and write the overlay.

    ``sshd_ports`` are the hosts' sshd ports (``ssh_ports``; 22 where not given).
    """
    if connection not in CONNECTIONS:
        raise FleetError(f"connection {connection!r}: one of {', '.join(CONNECTIONS)}")
    directory = lab_dir(source)
    if _podman("image", "exists", IMAGE, check=False).returncode != 0:
        raise FleetError(f"image {IMAGE} is missing (run `make bootstrap`)")
    lab = lab_id(source.directory)
    with _allocation_lock():
        previous = load_state(directory)
        networks = _networks()
        others = other_labs(lab)
        own = next((n for n in networks if n.get("name") == network_name(lab)), None)
        own_subnets = [s for s in _subnets(own) if s.version == 4] if own else []
        state = plan_state(
            lab,
            source.directory,
            [h.name for h in fleet.hosts],
            previous,
            used_subnets=[
                *(s for n in networks if n is not own for s in _subnets(n)),
                *(ipaddress.ip_network(o.subnet) for o in others),
            ],
            own_subnet=str(own_subnets[0]) if own_subnets else None,
            port_owners=port_owners(others),
            port_in_use=port_in_use,
        )
        state.connection = connection
        state.ssh_ports = {h.name: (sshd_ports or {}).get(h.name, 22) for h in fleet.hosts}
        save_state(directory, state)
        _ensure_network(state, networks)
    hosts = lab_hosts(fleet, state)
    say(f"containers on {state.network} ({state.subnet})")
    for h in hosts:
        _ensure_container(state, h)
    # Debian packages through the machine's apt cache, reached on the lab network's gateway.
    apt_port = _apt_cache_port() if apt_cache else None
    state.apt_proxy = f"http://{state.gateway}:{apt_port}/" if apt_port else None
    for h in hosts:
        _set_apt_proxy(h.container, state.apt_proxy)
    save_state(directory, state)
    public_key = _lab_key(directory)
    say("enrolling the lab admin and recording host keys")
    for h in hosts:
        container_ssh.enroll(
            h.container, h.address, LAB_ADMIN, public_key, known_hosts_path(directory),
            port=state.ssh_ports[h.name],
        )  # fmt: skip
    say("staging the stand-in artifacts and starting the XNAT REST stand-ins")
    manifest = stage_standins(
        fleet, directory, apt_proxy=f"http://127.0.0.1:{apt_port}/" if apt_port else None
    )
    urls = start_xnat_standins(fleet, directory, state.standin_ports, port_owners(other_labs(lab)))
    document = overlay(fleet, state, public_key, directory, directory / "store", manifest, urls)
    overlay_path(source).write_text(
        "# Written by `xnat-fleet lab up`: the lab's connection settings layered over the\n"
        "# inventory. Do not edit; `xnat-fleet lab down` removes it.\n"
        + yaml.safe_dump(document, sort_keys=True)
    )
    return state


def require(source: InventorySource) -> LabState | None:
    """For ``--lab``: the lab's state (None if only its overlay is there), or an error saying
    how to start the lab when it has no overlay."""
    if not overlay_path(source).is_file():
        raise FleetError(
            f"no lab for {source.path}: run `xnat-fleet lab up -i {source.path}` first"
        )
    return load_state(lab_dir(source))


def down(source: InventorySource) -> list[str]:
    """Remove this lab's containers, network, stand-ins and directory; the containers removed.

    Only what carries this lab's id goes: another inventory's lab is left alone.
    """
    directory = lab_dir(source)
    lab = lab_id(source.directory)
    state = load_state(directory) if (directory / STATE_FILE).is_file() else None
    stop_xnat_standins(directory)
    names = {n for c in _containers(f"{LABEL_ID}={lab}") for n in _names(c)}
    if state is not None:
        names |= {state.container(h) for h in state.addresses}
    removed = []
    for name in sorted(names):
        if _podman("rm", "-f", "--ignore", name, check=False).returncode == 0:
            removed.append(name)
    _podman("network", "rm", "-f", network_name(lab), check=False)
    shutil.rmtree(directory, ignore_errors=True)
    return removed


def status(fleet: Fleet, source: InventorySource) -> tuple[str, LabState | None, dict[str, str]]:
    """The lab id, its state (None: not up) and host -> container state."""
    lab = lab_id(source.directory)
    state = load_state(lab_dir(source))
    out: dict[str, str] = {}
    for h in fleet.hosts:
        proc = _podman(
            "inspect", "--type", "container", "--format", "{{.State.Status}}",
            container_name(lab, h.name), check=False,
        )  # fmt: skip
        out[h.name] = proc.stdout.strip() if proc.returncode == 0 else "missing"
    return lab, state, out

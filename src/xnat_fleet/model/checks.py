"""Rules that span variables, hosts or files: the part of validation pydantic fields cannot hold.

Each check yields :class:`Problem` records naming the host and the variable path.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from xnat_fleet.model.fleet import CertificateFiles, Host, HostConfig, Problem
from xnat_fleet.paths import roles_dir

if TYPE_CHECKING:
    from xnat_fleet.model.loader import LoadedInventory


@dataclass(frozen=True)
class Unrenderable:
    """A variable whose Jinja2 template failed to render (e.g. it names an undefined variable)."""

    error: str


# Ports the roles open on every host besides the ones the inventory lists.
FIXED_PORTS = {"http (tls_proxy redirect)": 80, "https (tls_proxy)": 443}
# docs/xnat-host.md §1: the admin UI accepts SCP ports 1024-49151. No role forwards a privileged
# port (DICOM's well-known 104) to a receiver: scanners send to the receiver's own port.
DICOM_PORT_RANGE = range(1024, 49152)
DICOM_WELL_KNOWN_PORT = 104
# A source network at least this wide (prefix length below this) counts as "the internet"; in
# IPv6 a /32 is an ISP's allocation. Unique-local and link-local IPv6 networks are private.
INTERNET_PREFIX = {4: 8, 6: 32}
PRIVATE_IPV6 = (ipaddress.IPv6Network("fc00::/7"), ipaddress.IPv6Network("fe80::/10"))
SERVICES = {"ssh": "SSH", "https": "HTTPS (web UI and API)", "dicom": "the DICOM ports"}
# XNAT's own accounts (docs/xnat-host.md §1), disabled once the service account exists.
BUILTIN_ACCOUNTS = ("admin", "guest")


def group_layout(
    hostvars: Mapping[str, object], central: list[str], relays: list[str]
) -> Iterator[Problem]:
    if len(central) != 1:
        found = ", ".join(central) or "none"
        yield Problem((), "groups.central", f"exactly one central host is required (found {found})")
    for name in sorted(set(central) & set(relays)):
        yield Problem((name,), "groups", "a host cannot be in both the central and relays groups")
    for name in sorted(set(hostvars) - set(central) - set(relays)):
        yield Problem((name,), "groups", "host is in neither the central nor the relays group")
    lowered = Counter(r.lower() for r in relays)
    for name in relays:
        if lowered[name.lower()] > 1:
            yield Problem(
                (name,), "inventory_hostname", "relay names must be unique (ignoring case)"
            )


@functools.cache
def _role_specs() -> dict[str, dict[str, Any]]:
    """role name -> the options of its main entry point (roles/<role>/meta/argument_specs.yml)."""
    specs: dict[str, dict[str, Any]] = {}
    for spec_file in sorted(roles_dir().glob("*/meta/argument_specs.yml")):
        data = yaml.safe_load(spec_file.read_text()) or {}
        main = (data.get("argument_specs") or {}).get("main") or {}
        specs[spec_file.parent.parent.name] = main.get("options") or {}
    return specs


def _role_of(variable: str) -> str | None:
    matches = [r for r in _role_specs() if variable.startswith(r + "_")]
    return max(matches, key=len) if matches else None


def other_variables(host: str, variables: Mapping[str, Any]) -> Iterator[Problem]:
    """Variables that are not ``fleet_*``: connection settings, secrets and role inputs."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    for key, value in sorted(variables.items()):
        if isinstance(value, Unrenderable):
            yield Problem((host,), key, f"cannot be rendered: {value.error}")
            continue
        if key.startswith(("fleet_", "ansible_", "vault_")):
            continue
        role = _role_of(key)
        if role is None:
            yield Problem(
                (host,),
                key,
                "unknown variable: not fleet_*, vault_*, ansible_* or the input of a role",
            )
            continue
        options = _role_specs()[role]
        if key not in options:
            yield Problem((host,), key, f"not an input of role {role} (meta/argument_specs.yml)")
            continue
        result = ArgumentSpecValidator({key: options[key]}).validate({key: value})
        for message in result.error_messages:
            yield Problem((host,), key, f"role {role}: {message}")


def host_rules(host: Host) -> Iterator[Problem]:
    name, c = host.name, host.config
    yield from _ports(name, c)
    if host.kind == "relay":
        if c.fleet_site is None:
            yield Problem((name,), "fleet_site", "a relay needs its site (id and name)")
        if not c.fleet_dicom_receivers:
            yield Problem((name,), "fleet_dicom_receivers", "a relay needs a DICOM receiver")
        if c.fleet_projects:
            yield Problem(
                (name,),
                "fleet_projects",
                "only the central host lists projects; relay projects come from fleet_sync",
            )
        yield from _duplicates(name, "fleet_scanners", [s.ae_title for s in c.fleet_scanners])
        yield from _duplicates(name, "fleet_scanners", [s.address for s in c.fleet_scanners])
        yield from _duplicates(
            name, "fleet_dicom_receivers", [r.ae_title for r in c.fleet_dicom_receivers]
        )
        yield from _duplicates(name, "fleet_sync", [s.project for s in c.fleet_sync])
        if c.fleet_sync and not c.fleet_push_from:
            yield Problem(
                (name,),
                "fleet_push_from",
                "required with fleet_sync: the address(es) or network(s) this relay's Xsync pushes "
                "come from as the central host sees them (the site's NAT address; ansible_host "
                "only when nothing translates it); the central host admits them on HTTPS",
            )
    else:
        if not c.fleet_projects:
            yield Problem((name,), "fleet_projects", "the central host needs its projects")
        for var in ("fleet_site", "fleet_scanners", "fleet_sync", "fleet_push_from"):
            if getattr(c, var):
                yield Problem((name,), var, "only relays have this variable")
        yield from _duplicates(name, "fleet_projects", [p.id for p in c.fleet_projects])


def _duplicates(host: str, variable: str, values: list[str]) -> Iterator[Problem]:
    counts = Counter(values)
    for i, value in enumerate(values):
        if counts[value] > 1 and values.index(value) != i:
            yield Problem((host,), f"{variable}[{i}]", f"duplicate value {value!r}")


def _ports(host: str, c: HostConfig) -> Iterator[Problem]:
    used: dict[int, str] = {c.fleet_ssh_port: "ssh (fleet_ssh_port)"}
    for service, port in FIXED_PORTS.items():
        if port in used:
            yield Problem((host,), "fleet_ssh_port", f"port {port} is also used by {service}")
        used.setdefault(port, service)
    for i, receiver in enumerate(c.fleet_dicom_receivers):
        var = f"fleet_dicom_receivers[{i}].port"
        if receiver.port not in DICOM_PORT_RANGE:
            why = (
                "; no role forwards port 104 to it (there is no DICOM proxy): configure the "
                "scanners with the receiver's own port, e.g. 8104"
                if receiver.port == DICOM_WELL_KNOWN_PORT
                else ""
            )
            yield Problem(
                (host,),
                var,
                f"port {receiver.port}: XNAT's DICOM receiver needs a port in 1024-49151{why}",
            )
        if receiver.port in used:
            yield Problem(
                (host,), var, f"port {receiver.port} is already used by {used[receiver.port]}"
            )
        else:
            used[receiver.port] = f"DICOM receiver {receiver.ae_title}"


def internet_wide(value: str) -> bool:
    """Whether a source network counts as the whole internet (see INTERNET_PREFIX)."""
    net = ipaddress.ip_network(value, strict=False)
    if net.prefixlen >= INTERNET_PREFIX[net.version]:
        return False
    return not (
        isinstance(net, ipaddress.IPv6Network) and any(net.subnet_of(p) for p in PRIVATE_IPV6)
    )


def _internet_problem(host: str, var: str, value: str, service: str, where: str = "") -> Problem:
    return Problem(
        (host,),
        var,
        f"{value} opens {SERVICES[service]}{where} to the whole internet (a network wider than "
        f"/8, or /32 in IPv6); list only the networks that need it, or add {service} to "
        f"fleet_allow_internet{where and ' of that host'} if that is intended",
    )


def internet_exposure(host: str, c: HostConfig, variables: Mapping[str, Any]) -> Iterator[Problem]:
    """Firewall sources that admit the whole internet without the host's fleet_allow_internet."""
    sources: list[tuple[str, str, list[str]]] = [
        ("ssh", "fleet_networks.admin", c.fleet_networks.admin),
        ("https", "fleet_https_from", c.fleet_https_from),
    ]
    # Role inputs set in the inventory replace the mappings of playbooks/group_vars.
    for service in SERVICES:
        var = f"firewall_{service}_sources"
        value = variables.get(var)
        if isinstance(value, list):
            mapped = {v for s, _, vs in sources if s == service for v in vs}
            sources.append((service, var, [v for v in value if v not in mapped]))
    for service, var, values in sources:
        if service in c.fleet_allow_internet:
            continue
        for i, value in enumerate(values):
            try:
                wide = isinstance(value, str) and internet_wide(value)
            except ValueError:
                continue  # not a network: the role's own validation reports it
            if wide:
                yield _internet_problem(host, f"{var}[{i}]", value, service)


def references(
    hosts: Mapping[str, Host], central: list[str], relays: list[str]
) -> Iterator[Problem]:
    """Names that must refer to something the inventory defines: projects and XNAT accounts."""
    from xnat_fleet.xnat.desired import xsync_account

    xsync_accounts = {
        xsync_account(r): r for r in relays if r in hosts and hosts[r].config.fleet_sync
    }
    for name, host in sorted(hosts.items()):
        c = host.config
        if host.kind == "central":
            projects = {p.id for p in c.fleet_projects}
            where = "fleet_projects"
        else:
            projects = {link.project for link in c.fleet_sync}
            where = "the fleet_sync projects: a relay's projects are those it pushes"
        routed = [
            (f"fleet_dicom_receivers[{i}].project", r.project)
            for i, r in enumerate(c.fleet_dicom_receivers)
        ] + [
            (f"fleet_event_subscriptions[{i}].project", s.project)
            for i, s in enumerate(c.fleet_event_subscriptions)
        ]
        for var, target in routed:
            if target is not None and target not in projects:
                yield Problem((name,), var, f"{target} is not a project of this host ({where})")
        reserved = {a: f"managed by the Xsync pairing of {r}" for a, r in xsync_accounts.items()}
        if host.kind != "central":
            reserved = {}
        for account in BUILTIN_ACCOUNTS:
            reserved[account] = "XNAT's built-in account, disabled once the service account exists"
        if c.fleet_xnat_service_user in reserved:
            yield Problem(
                (name,),
                "fleet_xnat_service_user",
                f"{c.fleet_xnat_service_user} cannot be the service account: "
                f"{reserved[c.fleet_xnat_service_user]}",
            )
        usernames = [u.username for u in c.fleet_xnat_users]
        yield from _duplicates(name, "fleet_xnat_users", usernames)
        service = {c.fleet_xnat_service_user: "the service account (fleet_xnat_service_user)"}
        for i, user in enumerate(usernames):
            why = (reserved | service).get(user)
            if why:
                yield Problem(
                    (name,),
                    f"fleet_xnat_users[{i}].username",
                    f"{user} is {why}; remove this entry",
                )
        known = set(usernames) | {c.fleet_xnat_service_user}
        for i, project in enumerate(c.fleet_projects):
            seen: dict[str, str] = {}
            for role in ("owners", "members", "collaborators"):
                for j, user in enumerate(getattr(project, role)):
                    var = f"fleet_projects[{i}].{role}[{j}]"
                    if user in reserved:
                        yield Problem((name,), var, f"{user} is {reserved[user]}; do not list it")
                    elif user not in known:
                        yield Problem(
                            (name,),
                            var,
                            f"user {user} is not defined: add it to fleet_xnat_users (LDAP and "
                            "OpenID accounts too, with auth: ldap or openid)",
                        )
                    if user in seen:
                        yield Problem(
                            (name,),
                            var,
                            f"{user} is already listed in {seen[user]} of {project.id} (one "
                            "role per user and project)",
                        )
                    else:
                        seen[user] = role


def _address(value: Any, default: str) -> str:
    text = str(value) if value else default
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower().rstrip(".")


def unique_across_hosts(
    hosts: Mapping[str, Host],
    hostvars: Mapping[str, Mapping[str, Any]],
    central: list[str],
    relays: list[str],
) -> Iterator[Problem]:
    """Values two hosts must not share: names, addresses, URLs, site ids, Xsync accounts."""
    from xnat_fleet.xnat.desired import host_url, xsync_account

    order = [h for h in (*central, *relays) if h in hostvars]
    order += sorted(set(hostvars) - set(order))
    # ansible_host (default: the inventory name) with ansible_port: one machine, one host.
    targets: dict[tuple[str, str], str] = {}
    for name in order:
        v = hostvars[name]
        if v.get("ansible_connection") == "local":
            continue
        key = (_address(v.get("ansible_host"), name), str(v.get("ansible_port") or ""))
        if key in targets:
            port = f" port {key[1]}" if key[1] else ""
            yield Problem(
                (name,),
                "ansible_host",
                f"{key[0]}{port} is also the address of {targets[key]}: both would be provisioned "
                "on one machine (behind one NAT, give each a distinct ansible_port)",
            )
        else:
            targets[key] = name
    valid = [hosts[n] for n in order if n in hosts]
    fqdns: dict[str, str] = {}
    urls: dict[str, str] = {}
    for host in valid:
        fqdn = (host.config.fleet_fqdn or host.name).lower()
        if fqdn in fqdns:
            default = "" if host.config.fleet_fqdn else " (the default: the inventory name)"
            yield Problem(
                (host.name,),
                "fleet_fqdn",
                f"{fqdn}{default} is also the name of {fqdns[fqdn]}: each host needs its own "
                "name in URLs and certificates",
            )
        else:
            fqdns[fqdn] = host.name
        url = host_url(host).lower()
        if url in urls and host.config.fleet_xnat_url:
            yield Problem(
                (host.name,),
                "fleet_xnat_url",
                f"{url} is also the XNAT of {urls[url]}: both would be configured as one",
            )
        urls.setdefault(url, host.name)
    if len(central) == 1 and central[0] in hosts:
        study = hosts[central[0]].config.fleet_study.id
        for host in valid:
            site = host.config.fleet_site
            if host.kind == "relay" and site is not None and site.id.lower() == study.lower():
                yield Problem(
                    (host.name,),
                    "fleet_site.id",
                    f"{site.id} is the study id, the site id of the central XNAT; give the "
                    "relay its own",
                )
    accounts: dict[str, str] = {}
    for host in valid:
        if host.kind != "relay" or not host.config.fleet_sync:
            continue
        account = xsync_account(host.name)
        if account in accounts:
            yield Problem(
                (host.name,),
                "inventory_hostname",
                f"{host.name} and {accounts[account]} would share the central Xsync account "
                f"{account}; rename one",
            )
        else:
            accounts[account] = host.name


def push_addresses(
    hosts: Mapping[str, Host],
    central: list[str],
    relays: list[str],
    central_https_sources: list[str] | None,
) -> Iterator[Problem]:
    """Every relay's Xsync pushes are admitted by the central host's firewall, and only them.

    ``central_https_sources`` is the central host's ``firewall_https_sources`` as the playbooks
    render it (playbooks/group_vars/all/firewall.yml adds every relay's fleet_push_from; an
    inventory that sets it replaces that).
    """
    if len(central) != 1 or central[0] not in hosts:
        return
    centre = hosts[central[0]]
    admitted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for value in central_https_sources or []:
        try:
            admitted.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            continue
    for name in relays:
        host = hosts.get(name)
        if host is None:
            continue
        for i, value in enumerate(host.config.fleet_push_from):
            var = f"fleet_push_from[{i}]"
            net = ipaddress.ip_network(value, strict=False)
            if "https" not in centre.config.fleet_allow_internet and internet_wide(value):
                yield _internet_problem(name, var, value, "https", f" on {centre.name}")
            if central_https_sources is None:
                continue
            if not any(
                net.version == a.version and net.subnet_of(a)  # type: ignore[arg-type]
                for a in admitted
            ):
                yield Problem(
                    (name,),
                    var,
                    f"{value} is not admitted by the firewall of the central host {centre.name} "
                    "(its firewall_https_sources, set in the inventory, replaces the list "
                    "derived from fleet_https_from and the relays' fleet_push_from): its Xsync "
                    "pushes would be dropped",
                )


def required_secrets(c: HostConfig, relay: bool = False) -> dict[str, str]:
    """vault variable -> what it is for, for the features this host's configuration enables."""
    needed = {
        "vault_xnat_admin_password": "XNAT admin password",
        "vault_xnat_service_password": "XNAT service account password",
        "vault_xnat_db_password": "XNAT database password",
    }
    if relay:  # its encrypted data volume (roles/storage, docs/storage.md)
        needed["vault_storage_recovery_passphrase"] = "recovery passphrase of the data volume"  # noqa: S105
    # Names of vault variables, not secrets themselves (hence the S105 waivers).
    if c.fleet_smtp.username:
        needed["vault_smtp_password"] = "SMTP login of fleet_smtp.username"  # noqa: S105
    if c.fleet_ldap and c.fleet_ldap.enabled:
        needed["vault_ldap_bind_password"] = "LDAP bind of fleet_ldap.bind_dn"  # noqa: S105
    if c.fleet_openid and c.fleet_openid.enabled:
        needed["vault_openid_client_secret"] = "OpenID client fleet_openid.client_id"  # noqa: S105
    return needed


class _Vaulted(str):
    """A ``!vault`` value found while scanning a vars file without decrypting it."""


class _ScanLoader(yaml.SafeLoader):
    pass


_ScanLoader.add_constructor(
    "!vault",
    lambda loader, node: _Vaulted(loader.construct_scalar(node)),  # type: ignore[arg-type]
)
_ScanLoader.add_constructor(
    "!unsafe",
    lambda loader, node: str(loader.construct_scalar(node)),  # type: ignore[arg-type]
)


def _vars_files(directory: Path, kind: str, name: str) -> list[Path]:
    base = directory / kind
    files = [base / f"{name}{ext}" for ext in ("", ".yml", ".yaml", ".json")]
    found = [f for f in files if f.is_file()]
    if (base / name).is_dir():
        found += sorted(f for f in (base / name).rglob("*") if f.is_file())
    return found


def _walk_keys(data: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key), value
            yield from _walk_keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk_keys(item)


@functools.cache
def _file_secrets(path: Path) -> dict[str, bool]:
    """``vault_*`` variable -> encrypted?, for one vars or inventory file."""
    text = path.read_text(errors="replace")
    if text.startswith("$ANSIBLE_VAULT"):
        # Whole-file encryption: everything in it is encrypted at rest, so it never holds a
        # plain-text secret and need not be opened here.
        return {}
    try:
        data = yaml.load(text, Loader=_ScanLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.YAMLError:
        return {}
    return {
        key: isinstance(value, _Vaulted)
        for key, value in _walk_keys(data)
        if key.startswith("vault_")
    }


def _secret_sources(name: str, groups: list[str], inv: LoadedInventory) -> list[tuple[Path, bool]]:
    d = inv.source.directory
    files = [inv.source.hosts_file, *inv.source.overlays]
    for group in groups:
        files += _vars_files(d, "group_vars", group)
    files += _vars_files(d, "host_vars", name)
    return [(f, enc) for f in files for var, enc in _file_secrets(f).items() if var == name]


def secrets(
    host: str, c: HostConfig, variables: Mapping[str, Any], inv: LoadedInventory
) -> Iterator[Problem]:
    groups = ["all", *sorted(g for g, members in inv.groups.items() if host in members)]
    for var, purpose in required_secrets(c, relay="relays" in groups).items():
        value = variables.get(var)
        if not isinstance(value, str) or not value:
            yield Problem((host,), var, f"required secret missing ({purpose}); add it to the vault")
            continue
        plaintext = [f for f, encrypted in _secret_sources(var, groups, inv) if not encrypted]
        for f in plaintext:
            rel = (
                f.relative_to(inv.source.directory) if f.is_relative_to(inv.source.directory) else f
            )
            yield Problem(
                (host,), var, f"secret stored in plain text in {rel}; encrypt it with ansible-vault"
            )


def certificates(host: str, c: HostConfig, inv: LoadedInventory) -> Iterator[Problem]:
    yield from _certificate_pair(host, "fleet_ca", c.fleet_ca, inv, ca=True)
    if c.fleet_tls is not None:
        yield from _certificate_pair(host, "fleet_tls", c.fleet_tls, inv, ca=False)


def _certificate_pair(
    host: str, var: str, files: CertificateFiles, inv: LoadedInventory, *, ca: bool
) -> Iterator[Problem]:
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import is_encrypted_file

    cert_path = inv.source.directory / files.cert
    key_path = inv.source.directory / files.key
    if not cert_path.is_file():
        yield Problem((host,), f"{var}.cert", f"file {files.cert} not found")
        return
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        yield Problem((host,), f"{var}.cert", f"{files.cert} is not a PEM certificate")
        return
    if ca:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            yield Problem((host,), f"{var}.cert", f"{files.cert} is not a CA certificate")
    if not key_path.is_file():
        yield Problem((host,), f"{var}.key", f"file {files.key} not found")
        return
    with key_path.open("rb") as fh:
        encrypted = is_encrypted_file(fh)
    if not encrypted:
        yield Problem(
            (host,),
            f"{var}.key",
            f"{files.key} is a plain-text private key; encrypt it with ansible-vault encrypt",
        )
        return
    try:
        real = inv.loader.get_real_file(str(key_path.resolve()), decrypt=True)
    except AnsibleError as exc:
        yield Problem((host,), f"{var}.key", f"cannot decrypt {files.key}: {exc}")
        return
    try:
        key = serialization.load_pem_private_key(Path(real).read_bytes(), password=None)
    except (ValueError, TypeError):
        yield Problem((host,), f"{var}.key", f"{files.key} is not an unencrypted PEM private key")
        return
    finally:
        inv.loader.cleanup_tmp_file(real)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, fmt) != cert.public_key().public_bytes(enc, fmt):
        yield Problem((host,), f"{var}.key", f"{files.key} does not match {files.cert}")


def _command_wrappers(path: Path) -> tuple[str | None, set[str]] | str:
    """(command name, wrapper names) of a container-service command file, or a problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"cannot read {path.name} as JSON: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return f"{path.name} has no command 'name'"
    wrappers = {w.get("name") for w in data.get("xnat", []) if isinstance(w, dict)}
    return data["name"], {w for w in wrappers if isinstance(w, str)}


def xnat_config(
    host: str, c: HostConfig, variables: Mapping[str, Any], inv: LoadedInventory
) -> Iterator[Problem]:
    """What XNAT-as-code needs beyond the model: files present, names that refer to each other."""
    directory = inv.source.directory
    scripts = [("fleet_anonymization.script", c.fleet_anonymization.script)] + [
        (f"fleet_projects[{i}].anonymization.script", p.anonymization.script)
        for i, p in enumerate(c.fleet_projects)
        if p.anonymization
    ]
    for var, rel in scripts:
        if rel and not (directory / rel).is_file():
            yield Problem((host,), var, f"file {rel} not found")
    commands: dict[str, set[str]] = {}
    cs = c.fleet_container_service
    if cs is not None:
        if "container-service" not in c.fleet_plugins:
            yield Problem(
                (host,),
                "fleet_container_service",
                "needs the container-service plugin in fleet_plugins",
            )
        for i, rel in enumerate(cs.commands):
            var = f"fleet_container_service.commands[{i}]"
            if not (directory / rel).is_file():
                yield Problem((host,), var, f"file {rel} not found")
                continue
            found = _command_wrappers(directory / rel)
            if isinstance(found, str):
                yield Problem((host,), var, found)
            elif found[0] is not None:
                commands[found[0]] = found[1]
    all_wrappers = {w for ws in commands.values() for w in ws}
    wanted = [
        ("fleet_container_service.site_wrappers", w) for w in (cs.site_wrappers if cs else [])
    ]
    wanted += [
        (f"fleet_projects[{i}].wrappers", w)
        for i, p in enumerate(c.fleet_projects)
        for w in p.wrappers
    ]
    for var, wrapper in wanted:
        if wrapper not in all_wrappers:
            yield Problem(
                (host,), var, f"wrapper {wrapper!r} is in no command of fleet_container_service"
            )
    for i, sub in enumerate(c.fleet_event_subscriptions):
        var = f"fleet_event_subscriptions[{i}]"
        if sub.command not in commands:
            yield Problem(
                (host,),
                f"{var}.command",
                f"command {sub.command!r} is not in fleet_container_service.commands",
            )
        elif sub.wrapper not in commands[sub.command]:
            yield Problem(
                (host,), f"{var}.wrapper", f"command {sub.command!r} has no wrapper {sub.wrapper!r}"
            )
    keys = [(s.name, s.project) for s in c.fleet_event_subscriptions]
    for i, key in enumerate(keys):
        if keys.index(key) != i:
            yield Problem(
                (host,),
                f"fleet_event_subscriptions[{i}]",
                f"duplicate subscription {key[0]!r} for the same project (each copy would fire)",
            )
    passwords = variables.get("vault_xnat_user_passwords") or {}
    for i, user in enumerate(c.fleet_xnat_users):
        if user.auth == "local" and not (
            isinstance(passwords, Mapping) and passwords.get(user.username)
        ):
            yield Problem(
                (host,),
                f"vault_xnat_user_passwords.{user.username}",
                f"required secret missing (local account fleet_xnat_users[{i}]); "
                "add it to the vault",
            )


def fleet_rules(
    hosts: Mapping[str, Host], central: list[str], relays: list[str]
) -> Iterator[Problem]:
    site_ids: dict[str, str] = {}
    for name in relays:
        host = hosts.get(name)
        if host is None or host.config.fleet_site is None:
            continue
        site = host.config.fleet_site.id.lower()
        if site in site_ids:
            yield Problem(
                (name,),
                "fleet_site.id",
                f"site id {host.config.fleet_site.id!r} is already used by {site_ids[site]}",
            )
        else:
            site_ids[site] = name
    if len(central) != 1 or central[0] not in hosts:
        return
    projects = {p.id for p in hosts[central[0]].config.fleet_projects}
    for name in relays:
        host = hosts.get(name)
        if host is None:
            continue
        for i, link in enumerate(host.config.fleet_sync):
            if link.central_project not in projects:
                yield Problem(
                    (name,),
                    f"fleet_sync[{i}].central_project",
                    f"{link.central_project} is not a project of the central host {central[0]} "
                    "(fleet_projects)",
                )


@functools.cache
def version_matrix() -> dict[str, Any]:
    """data/version-matrix.yml: XNAT release line -> Java, Tomcat, PostgreSQL, plugins."""
    path = Path(__file__).resolve().parents[1] / "data" / "version-matrix.yml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def release_line(version: str) -> str | None:
    """The matrix line a version belongs to ("1.9.3.6" -> "1.9"); None when unknown."""
    lines = [line for line in version_matrix()["xnat"] if f"{version}.".startswith(f"{line}.")]
    return max(lines, key=len) if lines else None


def versions(host: Host) -> Iterator[Problem]:
    """The XNAT version matrix: Java, Tomcat, PostgreSQL and plugin versions (docs/xnat-host.md
    §2)."""
    name, c = host.name, host.config
    matrix = version_matrix()
    xnat = c.fleet_xnat.version
    line = release_line(xnat)
    if line is None:
        known = ", ".join(matrix["xnat"])
        yield Problem(
            (name,), "fleet_xnat.version", f"XNAT {xnat} is not in the version matrix ({known})"
        )
        return
    need = matrix["xnat"][line]
    os_facts = matrix["os"]["debian12"]
    tomcat_major = c.fleet_artifacts.tomcat.version.split(".")[0]
    if tomcat_major != str(need["tomcat"]):
        yield Problem(
            (name,),
            "fleet_artifacts.tomcat.version",
            f"XNAT {xnat} needs Tomcat {need['tomcat']}, not {c.fleet_artifacts.tomcat.version}",
        )
    jdk = c.fleet_artifacts.jdk
    if jdk is not None and jdk.major != need["java"]:
        yield Problem(
            (name,),
            "fleet_artifacts.jdk.major",
            f"XNAT {xnat} needs Java {need['java']}, not {jdk.major}",
        )
    if jdk is None and need["java"] not in os_facts["java_packages"]:
        yield Problem(
            (name,),
            "fleet_artifacts.jdk",
            f"XNAT {xnat} needs Java {need['java']} and Debian 12 has no package of it: "
            f"pin a Java {need['java']} archive",
        )
    pg = os_facts["postgresql"]
    if not need["postgresql"]["min"] <= pg <= need["postgresql"]["max"]:
        yield Problem(
            (name,), "fleet_xnat.version", f"XNAT {xnat} is not known to work with PostgreSQL {pg}"
        )
    if host.kind == "relay" and "xsync" not in c.fleet_plugins:
        yield Problem((name,), "fleet_plugins", "a relay needs the xsync plugin")
    for i, plugin in enumerate(c.fleet_plugins):
        var = f"fleet_plugins[{i}]"
        artifact = c.fleet_artifacts.plugins.get(plugin)
        if artifact is None:
            yield Problem((name,), var, f"{plugin} is not pinned in fleet_artifacts.plugins")
            continue
        if artifact.version in matrix["known_bad"].get(plugin, []):
            yield Problem((name,), var, f"{plugin} {artifact.version} is known to be broken")
            continue
        tested = need["plugins"].get(plugin, [])
        if artifact.version not in tested and not c.fleet_xnat.allow_untested_plugins:
            known = ", ".join(tested) or "none"
            yield Problem(
                (name,),
                var,
                f"{plugin} {artifact.version} is not known to work with XNAT {line} (known: "
                f"{known}); set fleet_xnat.allow_untested_plugins to accept it",
            )


def same_xnat_version(hosts: Mapping[str, Host], central: list[str]) -> Iterator[Problem]:
    """Xsync requires every relay to run the central host's XNAT version (ARCHITECTURE.md)."""
    if len(central) != 1 or central[0] not in hosts:
        return
    want = hosts[central[0]].config.fleet_xnat.version
    for host in hosts.values():
        if host.kind == "relay" and host.config.fleet_xnat.version != want:
            yield Problem(
                (host.name,),
                "fleet_xnat.version",
                f"{host.config.fleet_xnat.version} differs from the central host's {want} "
                "(Xsync needs equal versions)",
            )

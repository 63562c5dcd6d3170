"""Load a study from an Ansible inventory with Ansible's own managers, then validate it.

Nothing here opens a network connection: hosts are never contacted, host names are never
resolved. Validation collects every problem before reporting, so one run lists all of them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from xnat_fleet.errors import InventoryError, InventorySyntaxError
from xnat_fleet.model import checks
from xnat_fleet.model.fleet import Fleet, Host, HostConfig, Problem
from xnat_fleet.paths import playbooks_dir

# Variables Ansible adds to every host that are not part of the inventory.
_MAGIC = {
    "ansible_config_file",
    "ansible_facts",
    "ansible_playbook_python",
    "ansible_version",
    "group_names",
    "groups",
    "inventory_dir",
    "inventory_file",
    "inventory_hostname",
    "inventory_hostname_short",
    "playbook_dir",
    "omit",
}
# Variables the model no longer has -> why, instead of "unknown key".
REMOVED = {
    "fleet_networks.internal": "removed: nothing used it (the firewall admits SSH from "
    "fleet_networks.admin, HTTPS from fleet_https_from and the relays' fleet_push_from); "
    "delete it",
}
# File names Ansible reads as YAML in group_vars/ and host_vars/ (and YAML inventories).
YAML_SUFFIXES = {"", ".yml", ".yaml", ".json"}
SETTINGS_FILE = "xnat-fleet.yml"
VAULT_PASSWORD_ENV = "XNAT_FLEET_VAULT_PASSWORD_FILE"  # noqa: S105  # a variable name, no secret


@dataclass
class InventorySource:
    """An inventory as the CLI receives it: ``-i PATH`` plus optional overlay files.

    ``path`` may be a directory holding ``hosts.yml`` (and ``xnat-fleet.yml`` with CLI settings)
    or an inventory file. Overlays (the lab's connection settings) are further inventory sources
    layered on top; they never edit the inventory itself.
    """

    path: Path
    vault_password_file: Path | None = None
    overlays: list[Path] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def hosts_file(self) -> Path:
        if self.path.is_dir():
            for name in ("hosts.yml", "hosts.yaml", "hosts"):
                if (self.path / name).is_file():
                    return self.path / name
            raise InventoryError(f"{self.path}: no hosts.yml in this inventory directory")
        if not self.path.is_file():
            raise InventoryError(f"{self.path}: inventory not found")
        return self.path

    @property
    def sources(self) -> list[str]:
        return [str(self.hosts_file), *(str(o) for o in self.overlays)]

    def settings(self) -> dict[str, Any]:
        f = self.directory / SETTINGS_FILE
        if not f.is_file():
            return {}
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InventoryError(_yaml_error(f, exc)) from None
        allowed = {"vault_password_file", "artifact_store"}
        if not isinstance(data, dict) or set(data) - allowed:
            raise InventoryError(f"{f}: allowed keys are {', '.join(sorted(allowed))}")
        return data

    def vault_password(self) -> Path | None:
        """Explicit option, then $XNAT_FLEET_VAULT_PASSWORD_FILE, then the inventory's settings."""
        if self.vault_password_file:
            return self.vault_password_file
        if os.environ.get(VAULT_PASSWORD_ENV):
            return Path(os.environ[VAULT_PASSWORD_ENV])
        configured = self.settings().get("vault_password_file")
        return self.directory / configured if configured else None


@dataclass
class LoadedInventory:
    """Raw per-host variables (templated, plain Python types) and group membership."""

    source: InventorySource
    hostvars: dict[str, dict[str, Any]]
    groups: dict[str, list[str]]
    loader: Any  # ansible DataLoader with the vault secrets, for decrypting files later
    inventory: Any = None  # ansible InventoryManager, for rendering the playbooks' variables

    def playbook_vars(self, host: str, names: Iterable[str]) -> dict[str, Any]:
        """Variables as the playbooks see them on ``host``: the inventory with
        playbooks/group_vars (the role inputs mapped from ``fleet_*``) and hostvars of every
        host. Names that are not defined are left out."""
        from ansible.plugins.cache.memory import CacheModule as MemoryCache
        from ansible.template import Templar
        from ansible.vars.hostvars import HostVars
        from ansible.vars.manager import VariableManager

        if self.inventory is None:
            raise InventoryError(f"{self.source.path}: inventory not loaded through Ansible")
        basedir = self.loader.get_basedir()
        self.loader.set_basedir(str(playbooks_dir().resolve()))
        try:
            variables = VariableManager(loader=self.loader, inventory=self.inventory)
            variables._fact_cache = MemoryCache()
            HostVars(inventory=self.inventory, variable_manager=variables, loader=self.loader)
            raw = variables.get_vars(host=self.inventory.get_host(host), include_hostvars=True)
            templar = Templar(loader=self.loader, variables=raw)
            return {n: _plain(templar.template(raw[n])) for n in names if n in raw}
        finally:
            self.loader.set_basedir(basedir)


def _plain(value: Any) -> Any:
    """Ansible's tagged containers and strings -> plain Python (pydantic and json want these)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _vault_secrets(password: Path, loader: Any) -> list[tuple[str, Any]]:
    """Vault secrets from a password file or script, made current for lazy decryption.

    Ansible keeps one process-wide secrets context (inline ``!vault`` values decrypt through it);
    a library loads several inventories per process, so the context is replaced, not re-created.
    """
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import VaultSecretsContext, get_file_vault_secret

    try:
        secret = get_file_vault_secret(filename=str(password), vault_id="default", loader=loader)
        secret.load()
    except AnsibleError as exc:
        raise InventoryError(f"vault password file {password}: {exc}") from None
    secrets = [("default", secret)]
    current = VaultSecretsContext.current(optional=True)
    if current is None:
        VaultSecretsContext.initialize(VaultSecretsContext(secrets))
    else:
        current.secrets = secrets
    return secrets


def _yaml_error(path: Path, exc: yaml.YAMLError, note: str = "") -> str:
    """``FILE:LINE:COLUMN: YAML syntax error: PROBLEM`` (as editors and compilers write it)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({context} at line {context_mark.line + 1})"
    return f"{where}: YAML syntax error: {problem}{note}"


def _duplicate_keys(path: Path, node: yaml.Node, note: str) -> Iterator[str]:
    """A key given twice in one mapping: YAML keeps the last silently, Ansible only warns."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in seen:
                    m = key.start_mark
                    yield (
                        f"{path}:{m.line + 1}:{m.column + 1}: YAML syntax error: key "
                        f"{key.value!r} is given twice in one mapping{note}"
                    )
                seen.add(key.value)
            yield from _duplicate_keys(path, value, note)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(path, item, note)


def yaml_files(source: InventorySource) -> list[Path]:
    """Every file of the inventory Ansible reads as YAML: YAML hosts files and overlays,
    group_vars/ and host_vars/ (files and directories), and the CLI's settings file."""
    files = [f for f in (source.hosts_file, *source.overlays) if f.suffix in YAML_SUFFIXES - {""}]
    for kind in ("group_vars", "host_vars"):
        base = source.directory / kind
        if base.is_dir():
            files += sorted(
                f
                for f in base.rglob("*")
                if f.is_file()
                and f.suffix in YAML_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(base).parts)
                and not f.name.endswith("~")
            )
    settings = source.directory / SETTINGS_FILE
    if settings.is_file():
        files.append(settings)
    return files


def yaml_syntax_errors(source: InventorySource, vault: Any = None) -> list[str]:
    """Syntax errors (and keys given twice) in the inventory's YAML files, with file, line and
    column. Whole-file vault-encrypted files are checked decrypted when ``vault`` (an Ansible
    VaultLib) can open them."""
    from ansible.errors import AnsibleError

    errors: list[str] = []
    for f in yaml_files(source):
        text = f.read_text(errors="replace")
        note = ""
        if text.startswith("$ANSIBLE_VAULT"):
            if vault is None:
                continue
            try:
                text = vault.decrypt(text.encode()).decode(errors="replace")
            except AnsibleError:  # Ansible reports what it cannot decrypt
                continue
            note = f" (in the decrypted file: ansible-vault edit {f})"
        try:
            for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
                if document is not None:
                    errors += _duplicate_keys(f, document, note)
        except yaml.YAMLError as exc:
            errors.append(_yaml_error(f, exc, note))
    return errors


def _raise_syntax_errors(source: InventorySource, vault: Any) -> None:
    syntax = yaml_syntax_errors(source, vault)
    if syntax:
        raise InventorySyntaxError(
            syntax, f"{len(syntax)} YAML error(s) in {source.path}; nothing was changed"
        )


def load_inventory(source: InventorySource) -> LoadedInventory:
    """Read the inventory through Ansible's InventoryManager and VariableManager."""
    # Imported here: loading Ansible is slow and only needed by commands that read inventories.
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.cache.memory import CacheModule as MemoryCache
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    # Ansible also reads group_vars/host_vars next to the "playbook" (the loader's base
    # directory, by default the working directory): only the inventory's own count here.
    loader.set_basedir(str(source.directory.resolve()))
    try:
        password = source.vault_password()
    except InventoryError:
        _raise_syntax_errors(source, None)  # a broken settings file: listed with the others
        raise
    if password is not None:
        if not password.is_file():
            raise InventoryError(f"vault password file {password} not found")
        loader.set_vault_secrets(_vault_secrets(password, loader))
    _raise_syntax_errors(source, loader._vault if password else None)
    try:
        inventory = InventoryManager(loader=loader, sources=source.sources)
        variables = VariableManager(loader=loader, inventory=inventory)
        # Only what the inventory says: never facts a playbook run left in a persistent fact
        # cache (ansible-runner configures one; a process started from a play inherits it).
        variables._fact_cache = MemoryCache()
        hostvars: dict[str, dict[str, Any]] = {}
        for host in inventory.get_hosts():
            raw = variables.get_vars(host=host, include_hostvars=False)
            templar = Templar(loader=loader, variables=raw)
            own = {}
            for key, value in raw.items():
                if key in _MAGIC:
                    continue
                try:
                    own[key] = _plain(templar.template(value))
                except AnsibleError as exc:
                    own[key] = checks.Unrenderable(str(exc).splitlines()[0])
            hostvars[host.name] = own
        groups = {
            name: sorted(h.name for h in group.get_hosts())
            for name, group in inventory.groups.items()
        }
    except AnsibleError as exc:
        message = str(exc).splitlines()[0]
        if "vault" in message.lower() and password is None:
            message += f" (give --vault-password-file or set {VAULT_PASSWORD_ENV})"
        raise InventoryError(f"{source.path}: {message}") from None
    if not hostvars:
        raise InventoryError(f"{source.path}: the inventory has no hosts")
    return LoadedInventory(source, hostvars, groups, loader, inventory)


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_problems(host: str, error: ValidationError) -> Iterator[Problem]:
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = REMOVED.get(_loc(loc), "unknown variable or key (misspelt?)")
        yield Problem((host,), _loc(loc), message)


def _merge(problems: Iterable[Problem]) -> list[Problem]:
    """One line per (variable, message): study-wide mistakes list every host they affect."""
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in problems:
        by_key[(p.variable, p.message)].update(p.hosts)
    return sorted(Problem(tuple(sorted(h)), v, m) for (v, m), h in by_key.items())


def validate_inventory(source: InventorySource) -> tuple[Fleet | None, list[Problem]]:
    """Validate everything; return the fleet (None when invalid) and every problem found."""
    return validate_loaded(load_inventory(source))


def validate_loaded(inv: LoadedInventory) -> tuple[Fleet | None, list[Problem]]:
    """:func:`validate_inventory` on an inventory already read."""
    problems: list[Problem] = []
    hosts: dict[str, Host] = {}
    central = inv.groups.get("central", [])
    relays = inv.groups.get("relays", [])
    problems += checks.group_layout(inv.hostvars, central, relays)
    for name, variables in sorted(inv.hostvars.items()):
        fleet_vars = {k: v for k, v in variables.items() if k.startswith("fleet_")}
        problems += checks.other_variables(name, variables)
        try:
            config = HostConfig.model_validate(fleet_vars)
        except ValidationError as exc:
            problems += _model_problems(name, exc)
            continue
        kind = "central" if name in central else "relay"
        host = Host(name=name, kind=kind, config=config)
        hosts[name] = host
        problems += checks.host_rules(host)
        problems += checks.versions(host)
        problems += checks.secrets(name, config, variables, inv)
        problems += checks.certificates(name, config, inv)
        problems += checks.xnat_config(name, config, variables, inv)
        problems += checks.internet_exposure(name, config, variables)
    problems += checks.fleet_rules(hosts, central, relays)
    problems += checks.same_xnat_version(hosts, central)
    problems += checks.references(hosts, central, relays)
    problems += checks.unique_across_hosts(hosts, inv.hostvars, central, relays)
    problems += checks.push_addresses(hosts, central, relays, _central_https_sources(inv, central))
    problems = _merge(problems)
    if problems or len(central) != 1:
        return None, problems
    fleet = Fleet(central=hosts[central[0]], relays=[hosts[r] for r in relays])
    return fleet, []


def _central_https_sources(inv: LoadedInventory, central: list[str]) -> list[str] | None:
    """The central host's firewall_https_sources as the playbooks render it; None when it
    cannot be rendered here (a problem reported elsewhere)."""
    from ansible.errors import AnsibleError

    if len(central) != 1 or inv.inventory is None:
        return None
    try:
        value = inv.playbook_vars(central[0], ["firewall_https_sources"]).get(
            "firewall_https_sources"
        )
    except AnsibleError:
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def load_fleet(source: InventorySource) -> Fleet:
    """Validated fleet, or InventoryError listing every problem."""
    return load_fleet_and_vars(source)[0]


def load_fleet_and_vars(source: InventorySource) -> tuple[Fleet, LoadedInventory]:
    """Validated fleet and the raw variables (secrets included), or InventoryError."""
    inv = load_inventory(source)
    fleet, problems = validate_loaded(inv)
    if fleet is None:
        raise InventoryError("\n".join(str(p) for p in problems))
    return fleet, inv

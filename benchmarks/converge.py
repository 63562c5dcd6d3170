#!/usr/bin/env python3
"""Converge benchmark: a first and a no-op converge of the lab, timed per host.

    python benchmarks/converge.py [-i inventory/example] [--connection ssh|podman]
                                  [--hosts relay-kings|all] [--strategy STRATEGY]
                                  [-e KEY=VALUE ...] [--no-apt-cache] [--json] [--keep]

Takes the inventory's lab down (unless ``--keep``), brings it up with the chosen connection,
then runs ``playbooks/site.yml`` twice through the project's own runner
(``xnat_fleet.runner.run_playbook``, what ``xnat-fleet provision --lab`` runs), limited to one
host or for all of them. Per host and run it reports the wall time, the number of tasks and
the mean seconds per task, collected from the runner's progress events (``on_progress``), and
how many tasks changed (from the play recap: a no_log task's progress event does not say). The
second run must change nothing; the exit code is 1 when a run failed or the second one changed
something. Without ``--keep`` the lab is removed again at the end (unless something failed:
then it is left up to look into).

Timings per host come from the progress events as they arrive: a task's time on a host runs from
the task's start (or the host's previous result, for handlers) to the host's result, and "busy"
is the sum of these; "wall" is from the first task the host took part in to its last result
(with all hosts, site.yml's host stack runs on every host at once and the XNAT configuration
play afterwards, so a host's wall time can include waits for the others).

``--strategy`` picks Ansible's strategy plugin (default ``xnat_fleet_linear``, the project's own:
Mitogen's linear with each module in a fresh fork, ansible.cfg's default; ``linear``, Ansible's
own; or Mitogen for Ansible's ``mitogen_linear`` / ``mitogen_free`` as they come). The runner
passes no strategy of its own, and
ansible-runner starts ansible-playbook with this process's environment, so the benchmark sets
``ANSIBLE_STRATEGY`` (and, for Mitogen, ``ANSIBLE_STRATEGY_PLUGINS``) in its own ``os.environ``.
That it took effect is checked rather than assumed: during each run the controller's ssh
processes to the lab are sampled, telling Mitogen's (its bootstrap on the command line) from
Ansible's own, along with the host key options ssh really applies (ssh takes the first value of
an option given twice). ``-e KEY=VALUE`` adds an extra variable to every run (e.g.
``mitogen_task_isolation=fork``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_fleet import lab
from xnat_fleet.errors import FleetError
from xnat_fleet.model.loader import InventorySource, load_fleet_and_vars
from xnat_fleet.runner import Progress, RunResult, inventory_secrets, run_playbook

ROOT = Path(__file__).resolve().parents[1]
RESULT_KINDS = ("ok", "changed", "failed", "unreachable", "skipped")
# xnat_fleet_linear: plugins/strategy/ (ansible.cfg names that directory); the others: Ansible's
# and ansible_mitogen's own
MITOGEN_STRATEGIES = ("xnat_fleet_linear", "mitogen_linear", "mitogen_free")
STRATEGIES = (*MITOGEN_STRATEGIES, "linear")
# ssh options that decide whether the host key is checked
HOST_KEY_OPTIONS = ("StrictHostKeyChecking", "UserKnownHostsFile", "GlobalKnownHostsFile")
# what Mitogen's bootstrap puts on the ssh command line (mitogen.parent.Connection)
MITOGEN_BOOT = "zlib.decompress(binascii.a2b_base64(sys.argv[1])"


def strategy_env(strategy: str) -> dict[str, str]:
    """The environment that makes ansible-playbook run with STRATEGY: ``ANSIBLE_STRATEGY``,
    and for Mitogen's strategies ``ANSIBLE_STRATEGY_PLUGINS`` = ansible_mitogen's plugin dir."""
    if strategy not in STRATEGIES:
        raise FleetError(f"--strategy {strategy}: not one of {', '.join(STRATEGIES)}")
    env = {"ANSIBLE_STRATEGY": strategy}
    if strategy.startswith("mitogen"):
        spec = importlib.util.find_spec("ansible_mitogen")
        if spec is None or spec.origin is None:
            raise FleetError(f"--strategy {strategy}: Mitogen for Ansible is not installed")
        plugins = Path(spec.origin).resolve().parent / "plugins" / "strategy"
        if not (plugins / f"{strategy}.py").is_file():
            raise FleetError(f"--strategy {strategy}: no {strategy}.py in {plugins}")
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(plugins)
    return env


def extra_vars(pairs: list[str]) -> dict[str, str]:
    """``-e KEY=VALUE`` arguments as extra variables (values are strings)."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FleetError(f"-e {pair}: not KEY=VALUE")
        found[key.strip()] = value
    return found


def ssh_options(argv: list[str]) -> dict[str, str]:
    """The ``-o`` options of an ssh command line as ssh applies them: keys in lower case, the
    first value of an option given more than once (``-o K=V``, ``-o 'K V'``, ``-oK=V``)."""
    options: dict[str, str] = {}
    args = iter(argv[1:])
    for arg in args:
        if arg == "-o":
            text = next(args, "")
        elif arg.startswith("-o"):
            text = arg[2:]
        else:
            continue
        key, _, value = text.strip().replace("=", " ", 1).partition(" ")
        options.setdefault(key.lower(), value.strip())
    return options


@dataclass
class SshSeen:
    """The controller's ssh processes to the lab seen during a run."""

    processes: set[int] = field(default_factory=set)
    mitogen: set[int] = field(default_factory=set)
    # the effective host key options (HOST_KEY_OPTIONS) of each command line seen
    host_keys: set[tuple[tuple[str, str], ...]] = field(default_factory=set)

    def add(self, pid: int, argv: list[str]) -> None:
        self.processes.add(pid)
        if any(MITOGEN_BOOT in arg for arg in argv):
            self.mitogen.add(pid)
        options = ssh_options(argv)
        self.host_keys.add(
            tuple((k, options.get(k.lower(), "(ssh default)")) for k in HOST_KEY_OPTIONS)
        )

    @property
    def transport(self) -> str:
        if not self.processes:
            return "none seen"
        if len(self.mitogen) == len(self.processes):
            return "mitogen"
        return "ansible ssh" if not self.mitogen else "mixed"

    def describe(self) -> str:
        text = (
            f"{len(self.processes)} ssh processes to the lab seen, "
            f"{len(self.mitogen)} of them Mitogen's ({self.transport})"
        )
        for options in sorted(self.host_keys):
            text += "; ssh applies " + " ".join(f"{k}={v}" for k, v in options)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "processes": len(self.processes),
            "mitogen": len(self.mitogen),
            "transport": self.transport,
            "host_key_options": [dict(o) for o in sorted(self.host_keys)],
        }


class SshWatch:
    """Samples /proc while a run goes on for ssh processes whose command line names MARKER (the
    lab directory: its key and known_hosts are there). Processes already there when the watch
    starts (e.g. an earlier run's ControlPersist masters) are not the run's and are left out."""

    def __init__(self, marker: str, interval: float = 0.5, proc: Path = Path("/proc")) -> None:
        self.marker = marker
        self.interval = interval
        self.proc = proc
        self.seen = SshSeen()
        self.before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def scan(self) -> None:
        for entry in self.proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.before:
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            if argv and Path(argv[0]).name == "ssh" and any(self.marker in a for a in argv):
                self.seen.add(int(entry.name), argv)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.scan()

    def __enter__(self) -> SshWatch:
        self.before = {int(e.name) for e in self.proc.iterdir() if e.name.isdigit()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class HostTiming:
    tasks: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_KINDS, 0))
    busy: float = 0.0
    first: float | None = None
    last: float | None = None

    @property
    def wall(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first

    @property
    def per_task(self) -> float:
        return self.busy / self.tasks if self.tasks else 0.0


class Timings:
    """Per-host task timings from the runner's progress events (``on_progress``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[Progress], None] | None = None,
    ) -> None:
        self.clock = clock
        self.echo = echo
        self.task_started: float | None = None
        self.hosts: dict[str, HostTiming] = {}

    def __call__(self, p: Progress) -> None:
        now = self.clock()
        if self.echo is not None:
            self.echo(p)
        if p.kind == "task":
            self.task_started = now
            return
        if p.kind not in RESULT_KINDS:
            return
        h = self.hosts.setdefault(p.host, HostTiming())
        marks = [m for m in (self.task_started, h.last) if m is not None]
        since = max(marks) if marks else now
        h.busy += now - since
        h.first = since if h.first is None else h.first
        h.last = now
        h.tasks += 1
        h.counts[p.kind] += 1


@dataclass
class Run:
    name: str
    result: RunResult
    wall: float
    timings: Timings
    ssh: SshSeen = field(default_factory=SshSeen)

    def changed(self, host: str) -> int:
        """HOST's changed tasks from the play recap: the progress events cannot tell (a no_log
        task's result is censored, its ``changed`` flag with it)."""
        recap = self.result.hosts.get(host)
        return recap.changed if recap is not None else self.timings.hosts[host].counts["changed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.name,
            "status": self.result.status,
            "rc": self.result.rc,
            "wall_seconds": round(self.wall, 1),
            "tasks_started": self.result.tasks,
            "changed": self.result.changed,
            "failures": self.result.failures,
            "ssh": self.ssh.to_dict(),
            "hosts": {
                name: {
                    "wall_seconds": round(t.wall, 1),
                    "busy_seconds": round(t.busy, 1),
                    "tasks": t.tasks,
                    "changed": self.changed(name),
                    "failed": t.counts["failed"] + t.counts["unreachable"],
                    "skipped": t.counts["skipped"],
                    "seconds_per_task": round(t.per_task, 3),
                    "recap": vars(self.result.hosts[name]) if name in self.result.hosts else None,
                }
                for name, t in sorted(self.timings.hosts.items())
            },
        }


def say(text: str) -> None:
    print(f"benchmark: {text}", file=sys.stderr, flush=True)


def converge(
    name: str,
    source: InventorySource,
    limit: str | None,
    secrets: set[str],
    *,
    playbook: str = "site.yml",
    verbose: bool = False,
    extravars: dict[str, str] | None = None,
) -> Run:
    watch = SshWatch(str(lab.lab_dir(source).resolve()))
    started = time.monotonic()
    count = 0

    def echo(p: Progress) -> None:
        nonlocal count
        if p.kind == "task":
            count += 1
            if verbose or count % 25 == 0:
                say(f"{name}: task {count}: {p.task}")
        elif p.kind in ("failed", "unreachable"):
            say(f"{name}: {p.kind} {p.host}: {p.task}: {p.message}")

    timings = Timings(echo=echo)
    with watch:
        result = run_playbook(
            playbook,
            source,
            limit=limit,
            artifact_store=lab.lab_dir(source) / "store",
            on_progress=timings,
            secrets=secrets,
            extravars=extravars,
        )
    run = Run(name, result, time.monotonic() - started, timings, watch.seen)
    say(f"{name}: {result.status} in {run.wall:.0f} s, {result.changed} changed")
    say(f"{name}: {watch.seen.describe()}")
    if result.failed_early:
        for line in result.output:
            say(f"  {line}")
    return run


def table(runs: list[Run]) -> str:
    head = f"{'run':<7} {'host':<14} {'wall s':>8} {'busy s':>8} {'tasks':>6} {'changed':>8} "
    head += f"{'failed':>7} {'s/task':>7}"
    lines = [head, "-" * len(head)]
    for run in runs:
        for name, t in sorted(run.timings.hosts.items()):
            failed = t.counts["failed"] + t.counts["unreachable"]
            lines.append(
                f"{run.name:<7} {name:<14} {t.wall:>8.1f} {t.busy:>8.1f} {t.tasks:>6} "
                f"{run.changed(name):>8} {failed:>7} {t.per_task:>7.2f}"
            )
        lines.append(
            f"{run.name:<7} {'(run)':<14} {run.wall:>8.1f} {'':>8} {run.result.tasks:>6} "
            f"{run.result.changed:>8} {len(run.result.failures):>7} {'':>7}  {run.result.status}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/converge.py",
        description="Time a first and a no-op converge of the lab, per host.",
    )
    parser.add_argument("-i", "--inventory", type=Path, default=ROOT / "inventory" / "example")
    parser.add_argument("--connection", choices=lab.CONNECTIONS, default="ssh")
    parser.add_argument(
        "--hosts",
        default="all",
        help="one host of the inventory (the runner's limit, e.g. relay-kings) or all",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="xnat_fleet_linear",
        help="Ansible's strategy plugin: xnat_fleet_linear (the project's default: Mitogen, "
        "forked modules), linear (Ansible's own) or Mitogen's own",
    )
    parser.add_argument(
        "-e",
        "--extra-var",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra variable for every run (repeatable), e.g. mitogen_task_isolation=fork",
    )
    parser.add_argument("--no-apt-cache", action="store_true", help="lab up --no-apt-cache")
    parser.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="use the lab as it is (no lab down before) and leave it up afterwards",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="every task on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return benchmark(args)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def benchmark(args: argparse.Namespace) -> int:
    source = InventorySource(args.inventory)
    fleet, inv = load_fleet_and_vars(source)
    names = [h.name for h in fleet.hosts]
    if args.hosts != "all" and args.hosts not in names:
        raise FleetError(f"--hosts {args.hosts}: not a host of {args.inventory} ({names})")
    limit = None if args.hosts == "all" else args.hosts
    strategy = strategy_env(args.strategy)
    extravars = extra_vars(args.extra_var)
    # ansible-runner starts ansible-playbook with this process's environment (the runner adds
    # its own variables, no strategy among them)
    os.environ.update(strategy)
    say(f"strategy {args.strategy}: " + " ".join(f"{k}={v}" for k, v in strategy.items()))
    if not args.keep:
        say(f"lab down (a fresh lab: the first converge is a first one): {lab.down(source)}")
    started = time.monotonic()
    state = lab.up(
        fleet,
        source,
        connection=args.connection,
        apt_cache=not args.no_apt_cache,
        sshd_ports=lab.ssh_ports(fleet, inv),
        say=lambda text: say(f"lab up: {text}"),
    )
    lab_up = time.monotonic() - started
    apt = state.apt_proxy or "not used (--no-apt-cache)"
    say(f"lab {state.lab_id} up in {lab_up:.0f} s: connection {state.connection}, apt cache {apt}")
    layered = InventorySource(args.inventory, overlays=[lab.overlay_path(source)])
    _, layered_inv = load_fleet_and_vars(layered)
    secrets = inventory_secrets(layered_inv.hostvars, layered.vault_password())
    setup: list[str] = []
    host = next((h for h in fleet.hosts if h.name == limit), None)
    if host is not None and host.kind == "relay":
        # A relay pairs with the central XNAT (Xsync), which must be configured first, as on
        # real hosts where the central is provisioned before its relays. Only its REST API
        # (the stand-in on this machine) is configured; the central container is not touched.
        prep = converge(
            "setup",
            layered,
            fleet.central.name,
            secrets,
            playbook="xnat.yml",
            verbose=args.verbose,
            extravars=extravars,
        )
        if not prep.result.success:
            raise FleetError(
                f"configuring the central XNAT stand-in failed: {prep.result.failures}"
            )
        setup.append(
            f"the central's XNAT (stand-in) configured first with xnat.yml --limit "
            f"{fleet.central.name} ({prep.wall:.0f} s, not counted)"
        )
    runs = [
        converge(name, layered, limit, secrets, verbose=args.verbose, extravars=extravars)
        for name in ("first", "no-op")
    ]
    noop = runs[1].result.success and runs[1].result.changed == 0
    ok = all(r.result.success for r in runs) and noop
    expected = "mitogen" if args.strategy in MITOGEN_STRATEGIES else "ansible ssh"
    unexpected = [
        f"{r.name} ran over {r.ssh.transport}, not {expected} (--strategy {args.strategy})"
        for r in runs
        if state.connection == "ssh" and r.ssh.transport != expected
    ]
    ok = ok and not unexpected
    summary: dict[str, Any] = {
        "inventory": str(source.directory.resolve()),
        "lab_id": state.lab_id,
        "connection": state.connection,
        "strategy": args.strategy,
        "strategy_env": strategy,
        "extra_vars": extravars,
        "apt_cache": state.apt_proxy,
        "hosts": args.hosts,
        "limit": limit,
        "setup": setup,
        "lab_up_seconds": round(lab_up, 1),
        "runs": [r.to_dict() for r in runs],
        "second_run_noop": noop,
        "strategy_not_in_effect": unexpected,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"converge benchmark: {args.inventory} (lab {state.lab_id}), "
            f"hosts {args.hosts}" + (f" (--limit {limit})" if limit else "")
        )
        print(
            f"connection: {state.connection}; strategy: {args.strategy}; apt cache: {apt}; "
            f"lab up {lab_up:.0f} s"
        )
        if extravars:
            print("extra vars: " + " ".join(f"{k}={v}" for k, v in extravars.items()))
        for line in setup:
            print(f"setup: {line}")
        print(table(runs))
        for run in runs:
            print(f"ssh ({run.name}): {run.ssh.describe()}")
        print(
            "no-op converge: "
            + ("nothing changed" if noop else f"NOT a no-op ({runs[1].result.changed} changed)")
        )
        for run in runs:
            for failure in run.result.failures:
                print(f"failed ({run.name}): {failure}")
    for line in unexpected:
        print(f"strategy not in effect: {line}", file=sys.stderr if args.json else sys.stdout)
    if args.keep or not ok:
        why = "--keep" if args.keep else "left up to look into"
        say(f"lab kept ({why}): `xnat-fleet lab down -i {args.inventory}` removes it")
    else:
        lab.down(source)
        say("lab removed (--keep leaves it up)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

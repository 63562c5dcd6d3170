"""Plan / apply / read back, per host, over every reconciler in a fixed order.

The central host comes first (relays' Xsync pairings need its projects and accounts). For each
host: ``bootstrap.detect`` finds out whether XNAT is initialised and which credentials work; on an
uninitialised site the other reconcilers plan against XNAT's documented defaults without a request
(``HostContext.fresh``). Apply runs the bootstrap changes first, then, area by area, the changes of
a live plan, and reads back by planning that area again: anything left is an error
(:class:`NotConverged`), never a silent success.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Fleet
from xnat_fleet.model.loader import InventorySource, load_fleet_and_vars
from xnat_fleet.xnat import desired as desired_lib
from xnat_fleet.xnat.changes import Change, Plan, ReconcileError
from xnat_fleet.xnat.client import XnatClient, XnatError, scrub
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredStateError, DesiredXnat

# Apply order (xnat-design: bootstrap first, Xsync last: it needs projects and accounts).
AREAS = (
    "site",
    "smtp",
    "users",
    "projects",
    "anonymization",
    "receivers",
    "containers",
    "events",
    "xsync",
)
STANDIN_HEADER = "X-Standin"  # set by the tests' XNAT REST stand-in, never by XNAT


class NotConverged(FleetError):
    """A read-back after apply still differs from the inventory."""


class EngineError(FleetError):
    """XNAT refused or failed a request, or the desired state cannot be applied."""


def _module(area: str) -> ModuleType:
    return importlib.import_module(f"xnat_fleet.xnat.reconcilers.{area}")


@dataclass
class HostPlan:
    """A host's plan, with the context it was made in (apply reuses both)."""

    plan: Plan
    ctx: HostContext
    state: Any  # bootstrap.SiteState
    sections: list[tuple[str, list[Change]]] = field(default_factory=list)


def secrets_of(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if k.startswith("vault_")}


def desired_states(
    fleet: Fleet, hostvars: Mapping[str, Mapping[str, Any]], inventory_dir: Path
) -> dict[str, DesiredXnat]:
    """Every host's desired state, central first; a missing secret or file is an error."""
    out: dict[str, DesiredXnat] = {}
    try:
        for host in fleet.hosts:
            out[host.name] = desired_lib.build(
                fleet, host.name, secrets_of(hostvars[host.name]), inventory_dir
            )
    except DesiredStateError as exc:
        raise EngineError(str(exc)) from None
    return out


def open_study(source: InventorySource, *, prune: bool = False) -> tuple[Engine, list[str]]:
    """Validate the inventory (nothing is contacted unless it is valid) and make its engine;
    also the host names, central first."""
    fleet, inv = load_fleet_and_vars(source)
    engine = Engine(desired_states(fleet, inv.hostvars, source.directory), prune=prune)
    return engine, [h.name for h in fleet.hosts]


class Engine:
    def __init__(
        self,
        desired: Mapping[str, DesiredXnat],
        *,
        prune: bool = False,
        client_factory: Callable[[DesiredXnat], XnatClient] | None = None,
    ) -> None:
        self.desired = dict(desired)
        self.prune = prune
        self._factory = client_factory or self._default_client
        self._clients: dict[str, XnatClient] = {}
        self.secrets: set[str] = {s for d in self.desired.values() for s in d.secrets}

    @staticmethod
    def _default_client(d: DesiredXnat) -> XnatClient:
        return XnatClient(
            d.url, d.service_user, d.service_password, ca_file=d.ca_file, secrets=d.secrets
        )

    def client(self, host: str) -> XnatClient:
        if host not in self._clients:
            c = self._factory(self.desired[host])
            c.add_secret(*self.secrets)
            self._clients[host] = c
        return self._clients[host]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def context(self, host: str) -> HostContext:
        peers: dict[str, tuple[DesiredXnat, Callable[[], XnatClient]]] = {
            name: (d, partial(self.client, name))
            for name, d in self.desired.items()
            if name != host
        }
        return HostContext(
            desired=self.desired[host], client=self.client(host), prune=self.prune, peers=peers
        )

    def guard(self, host: str, func: Callable[[], Any]) -> Any:
        """``func()``; XNAT errors and impossible desired state become one scrubbed EngineError
        naming the host."""
        try:
            return func()
        except (XnatError, ReconcileError) as exc:
            message = str(exc)
            if not message.startswith(f"{host}:"):
                message = f"{host}: {message}"
            raise EngineError(self.scrub(message)) from None

    def plan(self, host: str) -> HostPlan:
        bootstrap = _module("bootstrap")
        ctx = self.context(host)
        d = ctx.desired
        state = self.guard(host, lambda: bootstrap.detect(d, ctx.client))
        ctx.fresh = not (state.initialized and state.service_account)
        sections: list[tuple[str, list[Change]]] = [
            ("bootstrap", self.guard(host, lambda: bootstrap.plan(ctx, state)))
        ]
        for area in AREAS:
            module = _module(area)
            sections.append((area, self.guard(host, partial(module.plan, ctx))))
        labels = ["XNAT REST stand-in (tests), not XNAT"] if self.is_standin(host) else []
        plan = Plan(
            host=host, url=d.url, changes=[c for _, cs in sections for c in cs], labels=labels
        )
        return HostPlan(plan=plan, ctx=ctx, state=state, sections=sections)

    def is_standin(self, host: str) -> bool:
        """Whether the tests' stand-in answers (its header), asked without logging in."""
        d = self.desired[host]
        c = self.client(host).as_user(d.service_user, d.service_password, use_session=False)
        try:
            response = c.request("GET", "/", ok=range(100, 600))
        except XnatError:
            return False
        finally:
            c.close()
        return STANDIN_HEADER in response.headers

    def apply(
        self, hp: HostPlan, on_change: Callable[[Change], None] | None = None
    ) -> list[Change]:
        """Apply a host's plan; returns the changes made. Read-back after every area."""
        host, ctx = hp.plan.host, hp.ctx
        done: list[Change] = []

        def run(changes: Iterable[Change]) -> None:
            for change in changes:
                if change.apply is None:
                    continue
                self.guard(host, change.apply)
                done.append(change)
                if on_change:
                    on_change(change)

        sections = dict(hp.sections)
        run(sections.get("bootstrap", []))
        if ctx.fresh:
            # Everything else was planned against defaults: plan again on the live site.
            # What an uninitialised site cannot tell (e.g. the version buildInfo reports, which
            # decides version-dependent roles) is known now: one more bootstrap pass if needed.
            bootstrap = _module("bootstrap")
            for attempt in range(2):
                state = self.guard(host, lambda: bootstrap.detect(ctx.desired, ctx.client))
                planned = self.guard(host, partial(bootstrap.plan, ctx, state))
                left = [c for c in planned if c.is_drift]
                if not left:
                    break
                if attempt:
                    raise NotConverged(f"{host}: bootstrap did not converge: {left[0].target}")
                run(left)
            ctx.fresh = False
            sections = {}
        for area in AREAS:
            module = _module(area)
            changes = sections.get(area)
            if changes is None:
                changes = self.guard(host, partial(module.plan, ctx))
            run(changes)
            left = [c for c in self.guard(host, partial(module.plan, ctx)) if c.is_drift]
            if left:
                raise NotConverged(
                    self.scrub(
                        f"{host}: {area}: read-back still differs after apply: "
                        + "; ".join(f"{c.action} {c.target}" for c in left[:5])
                    )
                )
        return done

"""Planning as a pure function, tested with data fixtures (first tier; the stand-in contract tests
are the second).

Each file ``tests/fixtures/plans/<area>.json`` holds cases ``{name, desired, current, [prune],
[fresh], [state], changes}``: ``desired`` overrides fields of a test desired state,
``current`` is what the area's reader would have returned (XNAT's answers, already typed by the
reader where it types them), and ``changes`` the plan expected, as ``Change.to_dict()`` without
``detail`` unless the case lists it. The client given to the planner refuses every request, so a
planner that reads or writes while planning fails the test.

The same expected list is also checked to be stable: planning twice gives the same changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.xnat_helpers import desired as base_desired
from tests.xnat_helpers import pairing, project
from xnat_fleet.model.fleet import (
    ContainerService,
    EventSubscription,
    Receiver,
    XnatUser,
    XsyncPreferences,
)
from xnat_fleet.xnat.changes import Change
from xnat_fleet.xnat.client import XnatClient
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reads import Account
from xnat_fleet.xnat.reconcilers import (
    anonymization,
    bootstrap,
    containers,
    events,
    projects,
    receivers,
    site,
    smtp,
    users,
    xsync,
)

FIXTURES = Path(__file__).parent / "fixtures" / "plans"
URL = "https://relay.invalid"
CENTRAL_URL = "https://central.invalid"


class NoRequests(XnatClient):
    """A client that fails the test on any request: planning must not send one. Once
    ``recording`` is set (after planning), it records the requests an apply sends instead and
    answers each with 200 and an empty JSON object."""

    recording: list[dict[str, Any]] | None = None

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.recording is None:
            raise AssertionError(f"the planner sent {method} {path}")
        data = kwargs.get("data")
        sent: dict[str, Any] = {"method": method, "path": path}
        if kwargs.get("params"):
            sent["params"] = dict(kwargs["params"])
        if data is not None:
            sent["content_type"] = kwargs.get("headers", {}).get("Content-Type")
            text = data.decode()
            try:
                sent["json"] = json.loads(text)
            except ValueError:
                sent["text"] = text
        self.recording.append(sent)
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.headers["Content-Type"] = "application/json"
        return response


def client(url: str = URL) -> NoRequests:
    return NoRequests(url, "xnat_fleet", "pw-not-used", use_session=False)


def build_desired(data: dict[str, Any], url: str = URL) -> DesiredXnat:
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "users":
            fields[key] = tuple(XnatUser(**u) for u in value)
        elif key == "projects":
            fields[key] = tuple(project(**p) for p in value)
        elif key == "receivers":
            fields[key] = tuple(Receiver(**r) for r in value)
        elif key == "subscriptions":
            fields[key] = tuple(EventSubscription(**s) for s in value)
        elif key == "container_service":
            fields[key] = ContainerService(**value)
        elif key == "commands":
            fields[key] = tuple(value)
        elif key == "xsync_prefs":
            fields[key] = XsyncPreferences(**value)
        elif key == "pairings":
            fields[key] = tuple(
                pairing(p.pop("relay", "relay-host"), central_url=CENTRAL_URL, **p) for p in value
            )
        elif key == "site_config":
            fields[key] = {**base_desired(url).site_config, **value}
        elif key in ("user_passwords",):
            fields[key] = dict(value)
        elif key == "central_accounts":
            fields[key] = tuple(value)
        else:
            fields[key] = value
    return base_desired(url, **fields)


def context(case: dict[str, Any]) -> HostContext:
    d = build_desired(case.get("desired", {}))
    peers: dict[str, tuple[DesiredXnat, Callable[[], XnatClient]]] = {}
    if d.pairings:
        central = build_desired(
            {"kind": "central", "host": "central-host", **case.get("central", {})}, CENTRAL_URL
        )
        peers["central-host"] = (central, lambda: client(CENTRAL_URL))
    return HostContext(
        desired=d,
        client=client(),
        fresh=case.get("fresh", False),
        prune=case.get("prune", False),
        peers=peers,
    )


def _accounts(data: dict[str, Any]) -> dict[str, Account | None]:
    return {
        k: None if v is None else Account.from_json({"username": k, **v}) for k, v in data.items()
    }


def plan_of(area: str, ctx: HostContext, case: dict[str, Any]) -> list[Change]:
    cur: Any = case.get("current")
    if area == "site":
        return site.plan_changes(ctx, cur)
    if area == "smtp":
        return smtp.plan_changes(ctx, smtp.normalise(cur) if cur is not None else {})
    if area == "users":
        return users.plan_changes(ctx, _accounts(cur))
    if area == "projects":
        return projects.plan_changes(
            ctx,
            projects.Current(
                {
                    pid: None if p is None else projects._Current(**p)
                    for pid, p in cur["projects"].items()
                },
                frozenset(cur.get("logins", ())),
            ),
        )
    if area == "anonymization":
        return anonymization.plan_changes(
            ctx,
            anonymization.Current(
                anonymization.Anon(**cur["site"]),
                {pid: anonymization.Anon(**a) for pid, a in cur.get("projects", {}).items()},
            ),
        )
    if area == "receivers":
        return receivers.plan_changes(ctx, cur)
    if area == "containers":
        return containers.plan_changes(
            ctx,
            containers.Current(
                cur.get("backend"),
                cur.get("commands", []),
                {(p, int(c), w): bool(on) for p, c, w, on in cur.get("enabled", [])},
            ),
        )
    if area == "events":
        return events.plan_changes(
            ctx,
            events.Current(
                cur.get("prefs"), cur.get("subscriptions", []), cur.get("registered", [])
            ),
        )
    if area == "bootstrap":
        state = bootstrap.SiteState(**case["state"])
        return bootstrap.plan_changes(
            ctx, state, bootstrap.Current(cur["switches"], cur["guest_enabled"])
        )
    if area == "xsync":
        session = xsync.XsyncSession(
            ctx, xsync.content_type_for(ctx.host, ctx.desired.version), ctx.desired.version
        )
        current = xsync.Current(
            central_projects={tuple(x) for x in cur.get("central_projects", [])},
            accounts={
                ("central-host", k): None if v is None else Account.from_json({"username": k, **v})
                for k, v in cur.get("accounts", {}).items()
            },
            levels={("central-host", q, u): lvl for q, u, lvl in cur.get("levels", [])},
            prefs=cur.get("prefs"),
            configs=cur.get("configs", {}),
        )
        return xsync.plan_changes(session, current)
    raise AssertionError(f"no planner for area {area}")


def _cases() -> list[Any]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        for case in json.loads(path.read_text()):
            out.append(pytest.param(path.stem, case, id=f"{path.stem}:{case['name']}"))
    return out


def _shown(change: Change, with_detail: bool) -> dict[str, Any]:
    data = change.to_dict()
    if not with_detail:
        data.pop("detail")
    return data


@pytest.mark.parametrize(("area", "case"), _cases())
def test_plan_from_fixture(area: str, case: dict[str, Any]) -> None:
    expected = case["changes"]
    with_detail = any("detail" in c for c in expected)
    got = [_shown(c, with_detail) for c in plan_of(area, context(case), case)]
    for change in expected:
        change.setdefault("before", None)
        change.setdefault("after", None)
        if with_detail:
            change.setdefault("detail", "")
    assert got == expected
    ctx = context(case)
    changes = plan_of(area, ctx, case)
    assert [_shown(c, with_detail) for c in changes] == got  # planning is repeatable
    if "requests" in case:
        # What applying the listed changes (default: all) sends, in order.
        assert isinstance(ctx.client, NoRequests)
        ctx.client.recording = []
        for i in case.get("apply", range(len(changes))):
            apply = changes[i].apply
            assert apply is not None
            apply()
        assert ctx.client.recording == case["requests"]


def test_every_reconciler_has_fixture_cases() -> None:
    """The fixture tier covers every area the engine plans."""
    from xnat_fleet.xnat.engine import AREAS

    have = {p.stem for p in FIXTURES.glob("*.json")}
    assert {"bootstrap", *AREAS} <= have


def test_a_planner_that_sends_a_request_fails_here() -> None:
    """The guard itself: the refusing client does refuse."""
    with pytest.raises(AssertionError, match="sent GET /xapi/users"):
        client().get_json("/xapi/users")

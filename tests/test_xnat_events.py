"""The events reconciler (docs/xnat-api.md §12) against the XNAT REST stand-in, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.xnat_helpers import (
    add_projects,
    apply_all,
    command,
    context,
    desired,
    project,
    refused,
    service_session,
    targets,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import ContainerService, EventSubscription
from xnat_fleet.xnat.changes import ReconcileError
from xnat_fleet.xnat.client import XnatError
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import containers, events

PROVIDER = "org.nrg.containers.services.CommandActionProvider:"
DICOM_ONLY = "$.scan.resources[?(@.label == 'DICOM')]"


def sub(name: str = "nifti-on-scan", **fields: Any) -> EventSubscription:
    values: dict[str, Any] = {
        "project": "P1",
        "command": "dcm2niix",
        "wrapper": "dcm2niix-scan",
        "payload_filter": DICOM_ONLY,
    }
    values.update(fields)
    return EventSubscription(name=name, **values)


SUBS = (sub(), sub("nifti-site-wide", project=None, payload_filter=""))


def state(url: str, **overrides: Any) -> DesiredXnat:
    fields: dict[str, Any] = {
        "container_service": ContainerService(commands=["commands/dcm2niix.json"]),
        "commands": (command(),),
        "projects": (project("P1"), project("P2")),
        "subscriptions": SUBS,
    }
    fields.update(overrides)
    return desired(url, **fields)


@pytest.fixture
def sa(sa: XnatStandin) -> XnatStandin:
    """The shared initialised stand-in (tests/xnat_fixtures.py) holding projects P1 and P2."""
    add_projects(sa, "P1", "P2")
    # An unmanaged command with two wrappers first, so that command ids and wrapper ids
    # differ: the action key must name the wrapper (container-service CommandActionProvider).
    other = command(name="other-tool")
    other["xnat"] = [dict(other["xnat"][0], name=n) for n in ("other-a", "other-b")]
    reply = service_session().post(f"{sa.url}/xapi/commands", json=other, timeout=10)
    reply.raise_for_status()
    return sa


def converge(ctx: HostContext) -> None:
    """Apply order containers, events (xnat-design.md)."""
    apply_all(containers.plan(ctx))
    apply_all(events.plan(ctx))


def wrapper_id(sa: XnatStandin) -> int:
    (cmd,) = [c for c in sa.state.commands.values() if c["name"] == "dcm2niix"]
    wid = int(cmd["xnat"][0]["id"])
    assert wid != cmd["id"]  # the tests tell wrapper ids from command ids
    return wid


def stored(sa: XnatStandin, name: str) -> list[dict[str, Any]]:
    return [s for s in sa.state.subscriptions.values() if s["name"] == name]


def test_plan_on_empty_site_lists_every_change(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    wid = wrapper_id(sa)
    changes = events.plan(ctx)
    assert targets(changes) == [
        ("update", "event service"),
        ("create", "subscription 'nifti-on-scan' (project P1)"),
        ("create", "subscription 'nifti-site-wide' (site-wide)"),
    ]
    assert changes[0].before == {"enabled": False}
    assert changes[1].after == {
        "name": "nifti-on-scan",
        "active": True,
        "action-key": f"{PROVIDER}{wid}",
        "attributes": {},
        "act-as-event-user": False,
        "event-filter": {
            "event-type": "org.nrg.xnat.eventservice.events.ScanEvent",
            "status": "CREATED",
            "project-ids": ["P1"],
            "payload-filter": DICOM_ONLY,
        },
    }
    site_filter = changes[2].after["event-filter"]
    assert site_filter["project-ids"] == []
    assert "payload-filter" not in site_filter  # no empty values (§18)
    assert sa.state.subscriptions == {}


def test_apply_converges_and_second_apply_changes_nothing(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    converge(ctx)
    assert events.plan(ctx) == []
    assert sa.state.events_prefs["enabled"] is True
    (first,) = stored(sa, "nifti-on-scan")
    assert first["action-key"] == f"{PROVIDER}{wrapper_id(sa)}"
    assert first["event-filter"]["project-ids"] == ["P1"]
    assert len(sa.state.subscriptions) == 2

    before = len(sa.requests_log)
    assert events.plan(ctx) == []
    assert [r for r in sa.requests_log[before:] if r[0] != "GET"] == []


def test_whole_run_planned_up_front_resolves_new_wrapper_ids(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    planned = containers.plan(ctx) + events.plan(ctx)  # before anything is registered
    placeholder = next(c for c in planned if c.target.startswith("subscription 'nifti-on-scan'"))
    assert placeholder.after["action-key"] == f"{PROVIDER}(id of dcm2niix/dcm2niix-scan)"
    apply_all(planned)
    assert containers.plan(ctx) == []
    assert events.plan(ctx) == []
    assert stored(sa, "nifti-on-scan")[0]["action-key"] == f"{PROVIDER}{wrapper_id(sa)}"


def test_replaced_command_repoints_subscriptions(sa: XnatStandin) -> None:
    converge(context(state(sa.url)))
    old = wrapper_id(sa)
    ctx = context(state(sa.url, commands=(command(image="xnat/dcm2niix:next"),)))
    planned = containers.plan(ctx) + events.plan(ctx)
    assert ("update", "subscription 'nifti-on-scan' (project P1)") in targets(planned)
    apply_all(planned)
    new = wrapper_id(sa)
    assert new != old
    assert stored(sa, "nifti-on-scan")[0]["action-key"] == f"{PROVIDER}{new}"
    assert events.plan(ctx) == []


def test_drift_behind_the_tools_back_shows_up(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    converge(ctx)
    (first,) = stored(sa, "nifti-on-scan")
    sid = first["id"]
    s = service_session()
    body = dict(first, **{"event-filter": dict(first["event-filter"], status="UPDATED")})
    s.put(f"{sa.url}/xapi/events/subscription/{sid}", json=body, timeout=10).raise_for_status()
    s.post(f"{sa.url}/xapi/events/subscription/{sid}/deactivate", timeout=10).raise_for_status()

    changes = events.plan(ctx)
    assert targets(changes) == [("update", "subscription 'nifti-on-scan' (project P1)")]
    assert changes[0].before == {"active": False, "event-filter.status": "UPDATED"}
    assert changes[0].after == {"active": True, "event-filter.status": "CREATED"}
    apply_all(changes)
    assert events.plan(ctx) == []
    assert sa.state.subscriptions[sid]["active"] is True

    # Someone switched the event service off: XNAT then lists no subscriptions at all (200, an
    # empty body; docs/xnat-api.md §12), so the plan cannot tell whether they still exist. It
    # switches the service on and creates each only if it is missing then: no duplicate.
    sa.state.events_prefs["enabled"] = False
    r = service_session().get(f"{sa.url}/xapi/events/subscriptions", timeout=10)
    assert r.status_code == 200 and r.text == ""
    changes = events.plan(ctx)
    assert targets(changes) == [
        ("update", "event service"),
        ("create", "subscription 'nifti-on-scan' (project P1)"),
        ("create", "subscription 'nifti-site-wide' (site-wide)"),
    ]
    assert all("created once it is on" in c.detail for c in changes[1:])
    before = {k: [s["id"] for s in stored(sa, k)] for k in ("nifti-on-scan", "nifti-site-wide")}
    apply_all(changes)
    assert [s["id"] for s in stored(sa, "nifti-on-scan")] == [sid]
    assert {k: [s["id"] for s in stored(sa, k)] for k in before} == before
    assert events.plan(ctx) == []


def test_duplicates_on_the_server_are_reduced_to_one(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    converge(ctx)
    (first,) = stored(sa, "nifti-on-scan")
    copy = {k: v for k, v in first.items() if k in ("name", "active", "action-key", "event-filter")}
    reply = service_session().post(f"{sa.url}/xapi/events/subscription", json=copy, timeout=10)
    assert reply.status_code == 201  # XNAT accepts the duplicate (§12)
    dup_id = events.parse_created_id(reply.text)

    changes = events.plan(ctx)
    assert [(c.action, c.before) for c in changes] == [
        ("delete", {"id": dup_id, "action-key": first["action-key"]})
    ]
    apply_all(changes)
    assert [s["id"] for s in stored(sa, "nifti-on-scan")] == [first["id"]]
    assert events.plan(ctx) == []


def test_unlisted_subscription_is_a_note_unless_prune(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    converge(ctx)
    manual = {"name": "by-hand", "action-key": f"{PROVIDER}1", "event-filter": {}}
    service_session().post(
        f"{sa.url}/xapi/events/subscription", json=manual, timeout=10
    ).raise_for_status()

    changes = events.plan(ctx)
    assert [(c.action, c.target, c.apply is None) for c in changes] == [
        ("note", "subscription 'by-hand' (site-wide)", True)
    ]
    pruning = context(state(sa.url), prune=True)
    changes = events.plan(pruning)
    assert targets(changes) == [("delete", "subscription 'by-hand' (site-wide)")]
    apply_all(changes)
    assert stored(sa, "by-hand") == []
    assert events.plan(pruning) == []


def test_inactive_subscription_and_same_name_in_two_projects(sa: XnatStandin) -> None:
    subs = (sub(active=False), sub(project="P2"))
    ctx = context(state(sa.url, subscriptions=subs))
    converge(ctx)
    assert events.plan(ctx) == []
    by_project = {s["event-filter"]["project-ids"][0]: s for s in stored(sa, "nifti-on-scan")}
    assert by_project["P1"]["active"] is False
    assert by_project["P2"]["active"] is True


def test_no_subscriptions_leaves_the_event_service_alone(sa: XnatStandin) -> None:
    ctx = context(state(sa.url, subscriptions=()))
    assert events.plan(ctx) == []
    assert all(path != "/xapi/events/prefs" for _, path, _ in sa.requests_log)


def test_fresh_site_is_planned_without_requests(sa: XnatStandin) -> None:
    ctx = context(state(sa.url), fresh=True)
    before = len(sa.requests_log)
    changes = events.plan(ctx)
    assert sa.requests_log[before:] == []
    assert targets(changes) == [
        ("update", "event service"),
        ("create", "subscription 'nifti-on-scan' (project P1)"),
        ("create", "subscription 'nifti-site-wide' (site-wide)"),
    ]
    assert all(
        c.after["action-key"] == f"{PROVIDER}(id of dcm2niix/dcm2niix-scan)" for c in changes[1:]
    )


@pytest.mark.parametrize(
    ("subs", "message"),
    [
        ((sub(), sub(payload_filter="")), "same name and project"),
        ((sub(command="dcm2bids"),), "command 'dcm2bids' is not in"),
        ((sub(wrapper="dcm2niix-session"),), "has no wrapper 'dcm2niix-session'"),
        ((sub(project="P9"),), "project 'P9' is not a project of this host"),
    ],
)
def test_invalid_desired_state_fails_before_any_request(
    sa: XnatStandin, subs: tuple[EventSubscription, ...], message: str
) -> None:
    err = refused(sa, lambda: events.plan(context(state(sa.url, subscriptions=subs))), message)
    assert (err.host, err.area) == ("test-host", "events")


def test_subscription_without_container_service_is_an_error(sa: XnatStandin) -> None:
    with pytest.raises(ReconcileError, match="not in fleet_container_service"):
        events.plan(context(state(sa.url, container_service=None, commands=())))


def test_created_reply_is_plain_text_name_colon_id() -> None:
    assert events.parse_created_id("nifti-on-scan:17") == 17
    assert events.parse_created_id("a:b:c:4\n") == 4  # names may contain colons
    with pytest.raises(XnatError, match="cannot read an id"):
        events.parse_created_id('{"id": 4}')

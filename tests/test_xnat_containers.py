"""The containers reconciler (docs/xnat-api.md §13) against the XNAT REST stand-in, over real
HTTP."""

from __future__ import annotations

import copy
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
from xnat_fleet.model.fleet import ContainerService
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import containers


def second_command() -> dict[str, Any]:
    other = command(name="dcm2bids", image="example/dcm2bids:3.1.1")
    other["xnat"] = [dict(other["xnat"][0], name="dcm2bids-session")]
    return other


def state(url: str, **overrides: Any) -> DesiredXnat:
    cs = ContainerService(
        host="unix:///var/run/docker.sock",
        path_translation_xnat_prefix="/data/xnat",
        path_translation_docker_prefix="/srv/xnat",
        max_concurrent_finalizing_jobs=3,
        commands=["commands/dcm2niix.json"],
        site_wrappers=["dcm2niix-scan"],
    )
    fields: dict[str, Any] = {
        "container_service": cs,
        "commands": (command(),),
        "projects": (project("P1", wrappers=["dcm2niix-scan"]), project("P2")),
    }
    fields.update(overrides)
    return desired(url, **fields)


@pytest.fixture
def sa(sa: XnatStandin) -> XnatStandin:
    """The shared initialised stand-in (tests/xnat_fixtures.py) holding projects P1 and P2."""
    add_projects(sa, "P1", "P2")
    return sa


def registered(sa: XnatStandin, name: str) -> list[dict[str, Any]]:
    return [c for c in sa.state.commands.values() if c["name"] == name]


def test_plan_on_empty_site_lists_every_change(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    changes = containers.plan(ctx)
    assert targets(changes) == [
        ("update", "docker server 'Local Docker'"),
        ("create", "command dcm2niix"),
        ("update", "wrapper dcm2niix/dcm2niix-scan (site)"),
        ("update", "wrapper dcm2niix/dcm2niix-scan in project P1"),
    ]
    backend = changes[0]
    assert backend.after == {
        "name": "Local Docker",
        "path-translation-xnat-prefix": "/data/xnat",
        "path-translation-docker-prefix": "/srv/xnat",
        "max-concurrent-finalizing-jobs": 3,
    }  # host and backend already match XNAT's default local socket
    assert changes[1].after == {
        "version": "1.5",
        "image": "xnat/dcm2niix:1.0.20230411",
        "wrappers": ["dcm2niix-scan"],
    }
    assert all(c.after == {"enabled": True} for c in changes[2:])
    assert sa.state.commands == {}  # planning wrote nothing


def test_apply_converges_and_second_apply_changes_nothing(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    assert containers.plan(ctx) == []

    server = sa.state.docker_server
    assert server["path-translation-docker-prefix"] == "/srv/xnat"
    assert server["max-concurrent-finalizing-jobs"] == 3
    assert server["auto-cleanup"] is True  # a field we do not manage kept its value
    (stored,) = registered(sa, "dcm2niix")
    cid = stored["id"]
    assert sa.state.wrappers_enabled == {(cid, "dcm2niix-scan")}
    assert sa.state.projects["P1"].wrappers_enabled == {(cid, "dcm2niix-scan")}
    assert sa.state.projects["P2"].wrappers_enabled == set()

    before = len(sa.requests_log)
    assert containers.plan(ctx) == []
    assert [r for r in sa.requests_log[before:] if r[0] != "GET"] == []  # not even a login


def test_changed_command_is_replaced_and_wrappers_enabled_again(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    (old,) = registered(sa, "dcm2niix")

    ctx = context(state(sa.url, commands=(command(image="xnat/dcm2niix:1.0.20240202"),)))
    changes = containers.plan(ctx)
    assert targets(changes) == [
        ("update", "command dcm2niix"),
        ("update", "wrapper dcm2niix/dcm2niix-scan (site)"),
        ("update", "wrapper dcm2niix/dcm2niix-scan in project P1"),
    ]
    assert changes[0].before == {"image": "xnat/dcm2niix:1.0.20230411"}
    assert changes[0].after == {"image": "xnat/dcm2niix:1.0.20240202"}
    apply_all(changes)
    assert containers.plan(ctx) == []
    (new,) = registered(sa, "dcm2niix")
    assert new["id"] != old["id"]
    assert new["image"] == "xnat/dcm2niix:1.0.20240202"
    assert (new["id"], "dcm2niix-scan") in sa.state.wrappers_enabled


def test_drift_behind_the_tools_back_shows_up(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    (stored,) = registered(sa, "dcm2niix")
    cid = stored["id"]
    s = service_session()
    # Someone disables the site wrapper and changes the backend's path translation over REST.
    s.put(f"{sa.url}/xapi/commands/{cid}/wrappers/dcm2niix-scan/disabled", timeout=10)
    server = s.get(f"{sa.url}/xapi/docker/server", timeout=10).json()
    server["path-translation-docker-prefix"] = "/elsewhere"
    s.post(f"{sa.url}/xapi/docker/server", json=server, timeout=10).raise_for_status()
    # ... and edits the command's command line in XNAT's state.
    sa.state.commands[cid]["command-line"] = "dcm2niix -z y -o /output /input"

    changes = containers.plan(ctx)
    assert targets(changes) == [
        ("update", "docker server 'Local Docker'"),
        ("update", "command dcm2niix"),
        ("update", "wrapper dcm2niix/dcm2niix-scan (site)"),
        ("update", "wrapper dcm2niix/dcm2niix-scan in project P1"),
    ]
    assert changes[0].before == {"path-translation-docker-prefix": "/elsewhere"}
    assert changes[1].before == {"command-line": "dcm2niix -z y -o /output /input"}
    apply_all(changes)
    assert containers.plan(ctx) == []


def test_unlisted_enabled_wrapper_is_a_note_unless_prune(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    (stored,) = registered(sa, "dcm2niix")
    sa.state.projects["P2"].wrappers_enabled.add((stored["id"], "dcm2niix-scan"))

    changes = containers.plan(ctx)
    assert [(c.action, c.target, c.apply is None) for c in changes] == [
        ("note", "wrapper dcm2niix/dcm2niix-scan in project P2", True)
    ]
    assert not changes[0].is_drift

    pruning = context(state(sa.url), prune=True)
    changes = containers.plan(pruning)
    assert targets(changes) == [("update", "wrapper dcm2niix/dcm2niix-scan in project P2")]
    assert changes[0].after == {"enabled": False}
    apply_all(changes)
    assert sa.state.projects["P2"].wrappers_enabled == set()
    assert containers.plan(pruning) == []


def test_duplicate_registrations_are_replaced_by_one(sa: XnatStandin) -> None:
    ctx = context(state(sa.url))
    apply_all(containers.plan(ctx))
    (stored,) = registered(sa, "dcm2niix")
    sa.state.commands[999] = dict(copy.deepcopy(stored), id=999)

    changes = containers.plan(ctx)
    assert targets(changes)[0] == ("update", "command dcm2niix")
    assert "registered 2 times" in changes[0].detail
    apply_all(changes)
    assert len(registered(sa, "dcm2niix")) == 1
    assert containers.plan(ctx) == []


def test_two_commands_and_unmanaged_commands_left_alone(sa: XnatStandin) -> None:
    s = service_session()
    s.post(
        f"{sa.url}/xapi/commands", json=command(name="someone-elses"), timeout=10
    ).raise_for_status()
    ctx = context(state(sa.url, commands=(command(), second_command())))
    changes = containers.plan(ctx)
    assert ("create", "command dcm2bids") in targets(changes)
    assert ("update", "wrapper dcm2bids/dcm2bids-session (site)") not in targets(changes)
    apply_all(changes)
    assert containers.plan(ctx) == []
    assert len(registered(sa, "someone-elses")) == 1


def test_fresh_site_is_planned_without_requests(sa: XnatStandin) -> None:
    ctx = context(state(sa.url), fresh=True)
    before = len(sa.requests_log)
    changes = containers.plan(ctx)
    assert sa.requests_log[before:] == []
    assert targets(changes) == [
        ("update", "docker server 'Local Docker'"),
        ("create", "command dcm2niix"),
        ("update", "wrapper dcm2niix/dcm2niix-scan (site)"),
        ("update", "wrapper dcm2niix/dcm2niix-scan in project P1"),
    ]
    assert changes[0].after is not None and changes[0].after["host"] == (
        "unix:///var/run/docker.sock"
    )


def test_no_container_service_plans_nothing(sa: XnatStandin) -> None:
    before = len(sa.requests_log)
    assert containers.plan(context(desired(sa.url))) == []
    assert sa.requests_log[before:] == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"projects": (project("P1", wrappers=["no-such-wrapper"]),)},
            "wrapper 'no-such-wrapper' is not a wrapper",
        ),
        ({"commands": (command(), command())}, "a second command named 'dcm2niix'"),
        ({"commands": (command(xnat=[]),)}, "needs 'xnat'"),
        (
            {"commands": (command(), command(name="other"))},
            "wrapper name 'dcm2niix-scan' is ambiguous",
        ),
        (
            {"container_service": None, "projects": (project("P1", wrappers=["dcm2niix-scan"]),)},
            "needs fleet_container_service",
        ),
    ],
)
def test_invalid_desired_state_fails_before_any_request(
    sa: XnatStandin, overrides: dict[str, Any], message: str
) -> None:
    err = refused(sa, lambda: containers.plan(context(state(sa.url, **overrides))), message)
    assert err.area == "containers"
    assert err.host == "test-host"


def test_unknown_site_wrapper_fails_before_any_request(sa: XnatStandin) -> None:
    cs = ContainerService(commands=["x.json"], site_wrappers=["dcm2niix-scna"])
    refused(
        sa, lambda: containers.plan(context(state(sa.url, container_service=cs))), "dcm2niix-scna"
    )


def test_matches_ignores_server_ids_and_defaults() -> None:
    want = {"a": 1, "l": [{"name": "x", "id": 5}], "e": {}, "b": True}
    assert containers.matches(want, {"a": 1, "l": [{"name": "x", "id": 9, "k": 1}], "b": True})
    assert not containers.matches(want, {"a": 1, "l": [], "b": True})
    assert not containers.matches({"b": True}, {"b": 1})
    assert not containers.matches({"l": [1, 2]}, {"l": [2, 1]})

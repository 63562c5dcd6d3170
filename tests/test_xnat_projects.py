"""Projects reconciler against the XNAT REST stand-in over real HTTP (docs/xnat-api.md §9)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from tests.xnat_helpers import (
    AUTH,
    SERVICE_USER,
    apply_all,
    context,
    desired,
    drift,
    initialise,
    project,
    refused,
    targets,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import Project
from xnat_fleet.xnat.desired import ProjectSpec
from xnat_fleet.xnat.reconcilers import projects
from xnat_fleet.xnat.reconcilers.projects import XNAT_NS, project_xml

BAD_CODE: Any = 7  # the model refuses it; XNAT would not (§9)


@pytest.fixture
def sa(sa: XnatStandin) -> XnatStandin:
    """The shared initialised stand-in (tests/xnat_fixtures.py) with the users projects name."""
    for user in ("alice", "bob", "carol", "dave", "xsync_relay_1"):
        add_user(sa.url, user)
    return sa


def add_user(url: str, username: str) -> None:
    # docs/xnat-api.md §8: POST /xapi/users
    r = requests.post(
        url + "/xapi/users",
        auth=AUTH,
        json={
            "username": username,
            "password": f"pw-{username}-x1",
            "firstName": username,
            "lastName": "Test",
            "email": f"{username}@example.org",
            "enabled": True,
            "verified": True,
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text


def members(url: str, pid: str) -> dict[str, str]:
    r = requests.get(
        f"{url}/data/projects/{pid}/users", params={"format": "json"}, auth=AUTH, timeout=10
    )
    r.raise_for_status()
    return {row["login"]: row["GROUP_ID"] for row in r.json()["ResultSet"]["Result"]}


def text(url: str, path: str) -> str:
    r = requests.get(url + path, auth=AUTH, timeout=10)
    r.raise_for_status()
    return r.text.strip()


def study(**fields: Any) -> ProjectSpec:
    base: dict[str, Any] = {
        "name": "Study One",
        "description": "Brain MRI <pilot> & \"phase\" 'one' — Zürich",
        "accessibility": "protected",
        "prearchive_code": 4,
        "owners": ["alice"],
        "members": ["bob"],
        "collaborators": ["carol"],
    }
    base.update(fields)
    return project("STUDY1", **base)


def test_plan_on_empty_site_lists_every_change(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, projects=(study(), project("OTHER", owners=["dave"]))))
    changes = projects.plan(ctx)
    assert targets(changes) == [
        ("create", "project STUDY1"),
        ("create", "project STUDY1 member alice"),
        ("create", "project STUDY1 member bob"),
        ("create", "project STUDY1 member carol"),
        ("create", "project OTHER"),
        ("create", "project OTHER member dave"),
    ]
    assert changes[0].after == {
        "ID": "STUDY1",
        "secondary_ID": "STUDY1",
        "name": "Study One",
        "description": "Brain MRI <pilot> & \"phase\" 'one' — Zürich",
        "accessibility": "protected",
        "prearchive_code": 4,
    }
    assert [c.after for c in changes[1:4]] == [
        {"group": "Owners"},
        {"group": "Members"},
        {"group": "Collaborators"},
    ]
    assert all(c.apply is not None for c in changes)
    assert "STUDY1" not in sa.state.projects  # planning wrote nothing


def test_apply_converges_and_second_apply_changes_nothing(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, projects=(study(),)))
    apply_all(projects.plan(ctx))

    p = sa.state.projects["STUDY1"]
    assert (p.name, p.secondary_id) == ("Study One", "STUDY1")
    assert p.description == "Brain MRI <pilot> & \"phase\" 'one' — Zürich"
    assert text(sa.url, "/data/projects/STUDY1/accessibility") == "protected"
    assert text(sa.url, "/data/projects/STUDY1/prearchive_code") == "4"
    assert members(sa.url, "STUDY1") == {
        "alice": "STUDY1_owner",
        "bob": "STUDY1_member",
        "carol": "STUDY1_collaborator",
        SERVICE_USER: "STUDY1_owner",  # XNAT makes the creator an Owner; kept
    }

    mark = len(sa.requests_log)
    again = projects.plan(ctx)
    assert again == []
    apply_all(again)
    assert not writes(sa.requests_log[mark:])


def test_drift_behind_the_tools_back_is_planned_and_repaired(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url, projects=(study(),)))
    apply_all(projects.plan(ctx))
    base = sa.url + "/data/projects/STUDY1"
    for method, path in (
        ("PUT", "/accessibility/public"),
        ("PUT", "/prearchive_code/7"),  # XNAT accepts any integer (§9)
        ("PUT", "/users/Members/alice"),  # alice moved from Owners to Members
        ("DELETE", "/users/Collaborators/carol"),
    ):
        requests.request(method, base + path, auth=AUTH, timeout=10).raise_for_status()
    xml = project_xml("STUDY1", "Renamed", "other text")
    requests.put(
        base, data=xml, headers={"Content-Type": "text/xml"}, auth=AUTH, timeout=10
    ).raise_for_status()

    changes = drift(projects.plan(ctx))
    assert targets(changes) == [
        ("update", "project STUDY1"),
        ("update", "project STUDY1 member alice"),
        ("create", "project STUDY1 member carol"),
    ]
    assert changes[0].before == {
        "name": "Renamed",
        "description": "other text",
        "accessibility": "public",
        "prearchive_code": 7,
    }
    assert changes[0].after == {
        "name": "Study One",
        "description": "Brain MRI <pilot> & \"phase\" 'one' — Zürich",
        "accessibility": "protected",
        "prearchive_code": 4,
    }
    assert (changes[1].before, changes[1].after) == ({"group": "Members"}, {"group": "Owners"})
    apply_all(changes)
    assert drift(projects.plan(ctx)) == []
    assert sa.state.projects["STUDY1"].prearchive_code == 4
    assert members(sa.url, "STUDY1")["alice"] == "STUDY1_owner"


def test_unlisted_members_are_notes_without_prune_and_removed_with_it(sa: XnatStandin) -> None:
    spec = study()
    ctx = context(desired(sa.url, projects=(spec,), central_accounts=("xsync_relay_1",)))
    apply_all(projects.plan(ctx))
    for path in ("/users/Members/dave", "/users/Owners/xsync_relay_1"):
        requests.put(
            sa.url + "/data/projects/STUDY1" + path, auth=AUTH, timeout=10
        ).raise_for_status()

    changes = projects.plan(ctx)
    assert [(c.action, c.target, c.apply) for c in changes] == [
        ("note", "project STUDY1 member dave", None)
    ]
    assert "use --prune" in changes[0].detail

    pruning = context(
        desired(sa.url, projects=(spec,), central_accounts=("xsync_relay_1",)), prune=True
    )
    changes = projects.plan(pruning)
    # The service account (creator) and the per-relay Xsync account are never removed.
    assert [(c.action, c.target, c.before) for c in changes] == [
        ("delete", "project STUDY1 member dave", {"group": "Members"})
    ]
    apply_all(changes)
    assert projects.plan(pruning) == []
    assert set(members(sa.url, "STUDY1")) == {
        "alice",
        "bob",
        "carol",
        SERVICE_USER,
        "xsync_relay_1",
    }


def test_projects_not_in_the_inventory_are_ignored_even_with_prune(sa: XnatStandin) -> None:
    xml = project_xml("FOREIGN", "Someone else's", "")
    requests.post(
        sa.url + "/data/projects",
        data=xml,
        headers={"Content-Type": "text/xml"},
        auth=AUTH,
        timeout=10,
    ).raise_for_status()
    ctx = context(desired(sa.url, projects=(project("MINE"),)), prune=True)
    changes = projects.plan(ctx)
    assert [c.target for c in changes] == ["project MINE"]
    apply_all(changes)
    assert projects.plan(ctx) == []
    assert "FOREIGN" in sa.state.projects
    assert not [r for r in sa.requests_log if r[0] == "DELETE"]


def test_fresh_site_is_planned_without_any_request(standin: XnatStandin) -> None:
    ctx = context(desired(standin.url, projects=(study(),)), fresh=True)
    changes = projects.plan(ctx)
    assert standin.requests_log == []
    assert [c.action for c in changes] == ["create"] * 4
    # The fresh plan applies once the site is initialised (the engine's order).
    initialise(standin.url)
    for user in ("alice", "bob", "carol"):
        add_user(standin.url, user)
    apply_all(changes)
    assert projects.plan(context(desired(standin.url, projects=(study(),)))) == []


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            (ProjectSpec(Project.model_construct(id="P", name="P", prearchive_code=BAD_CODE)),),
            "prearchive_code 7",
        ),
        ((project("P"), project("P")), "listed twice"),
        ((project("P", owners=["alice"], members=["alice"]),), "alice is listed in Owners and"),
        ((project("P", members=["bob", "bob"]),), "bob is listed in Members twice"),
        ((project("P", description="bell \x07"),), "control characters"),
    ],
)
def test_invalid_desired_state_is_refused_before_any_request(
    sa: XnatStandin, specs: tuple[ProjectSpec, ...], message: str
) -> None:
    err = refused(sa, lambda: projects.plan(context(desired(sa.url, projects=specs))), message)
    assert err.area == "projects"
    assert err.host == "test-host"


def test_project_xml_escapes_everything() -> None:
    doc = project_xml('A"B', "<name> & co", 'it\'s "quoted" </xnat:description>')
    root = ET.fromstring(doc.encode())  # noqa: S314  # our own document
    assert root.tag == f"{{{XNAT_NS}}}projectData"
    assert root.get("ID") == 'A"B'
    assert root.get("secondary_ID") == 'A"B'
    assert root.findtext(f"{{{XNAT_NS}}}name") == "<name> & co"
    assert root.findtext(f"{{{XNAT_NS}}}description") == 'it\'s "quoted" </xnat:description>'

"""Users reconciler against the XNAT REST stand-in over real HTTP (docs/xnat-api.md §8)."""

from __future__ import annotations

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
    refused,
    shown,
    targets,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.model.fleet import XnatUser
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import users

ALICE_PW = "alice-pw-0b3f-never-shown"
BOB_PW = "bob-pw-77aa-never-shown"


def alice(**fields: Any) -> XnatUser:
    base: dict[str, Any] = {
        "username": "alice",
        "first_name": "Alice",
        "last_name": "Archer",
        "email": "alice@example.org",
        "roles": ["DataManager"],
        "groups": ["ALL_DATA_ACCESS"],
    }
    return XnatUser(**{**base, **fields})


def bob(**fields: Any) -> XnatUser:
    base: dict[str, Any] = {
        "username": "bob",
        "first_name": "Bob",
        "last_name": "Baker",
        "email": "bob@example.org",
        "enabled": False,
    }
    return XnatUser(**{**base, **fields})


def carol(**fields: Any) -> XnatUser:
    base: dict[str, Any] = {
        "username": "carol",
        "auth": "ldap",
        "first_name": "Carol",
        "last_name": "Cook",
        "email": "carol@example.org",
        "roles": ["SiteUser"],
    }
    return XnatUser(**{**base, **fields})


def users_desired(url: str, *people: XnatUser, **overrides: Any) -> DesiredXnat:
    fields: dict[str, Any] = {
        "users": people or (alice(), bob(), carol()),
        "user_passwords": {"alice": ALICE_PW, "bob": BOB_PW},
    }
    fields.update(overrides)
    return desired(url, **fields)


def test_plan_on_an_empty_site_lists_every_user(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url))
    changes = users.plan(ctx)
    assert targets(changes) == [
        ("create", "user alice"),
        ("create", "user bob"),
        ("note", "user carol"),
    ]
    assert changes[0].after == {
        "username": "alice",
        "password": "(secret)",
        "firstName": "Alice",
        "lastName": "Archer",
        "email": "alice@example.org",
        "enabled": True,
        "verified": True,
        "roles": ["DataManager"],
        "groups": ["ALL_DATA_ACCESS"],
    }
    assert changes[1].after["enabled"] is False
    assert changes[2].detail == "user carol (ldap) has not logged in yet"
    assert changes[2].apply is None
    text = shown(changes)
    assert ALICE_PW not in text and BOB_PW not in text


def test_apply_converges_and_second_apply_writes_nothing(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url))
    apply_all(users.plan(ctx))
    a = sa.state.users["alice"]
    assert a.password == ALICE_PW
    assert (a.first_name, a.last_name, a.email, a.enabled) == (
        "Alice",
        "Archer",
        "alice@example.org",
        True,
    )
    assert a.roles == ["DataManager"]
    assert a.groups == ["ALL_DATA_ACCESS"]
    assert sa.state.users["bob"].enabled is False
    assert "carol" not in sa.state.users  # LDAP users are never created
    left = users.plan(ctx)
    assert drift(left) == []
    assert [c.target for c in left] == ["user carol"]  # the note stays until carol logs in
    sa.requests_log.clear()
    apply_all(users.plan(ctx))
    assert writes(sa.requests_log) == []


def test_password_is_never_updated_once_the_account_exists(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url))
    apply_all(users.plan(ctx))
    sa.state.users["alice"].password = "alice-chose-her-own"
    assert drift(users.plan(ctx)) == []
    assert sa.state.users["alice"].password == "alice-chose-her-own"


def test_drift_over_rest_is_planned_and_fixed(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url))
    apply_all(users.plan(ctx))
    base = sa.url + "/xapi/users/alice"
    assert requests.put(base, json={"email": "a@elsewhere.org"}, auth=AUTH, timeout=5).ok
    assert requests.put(base + "/enabled/false", auth=AUTH, timeout=5).ok
    assert requests.delete(base + "/roles/DataManager", auth=AUTH, timeout=5).ok
    changes = drift(users.plan(ctx))
    assert len(changes) == 1
    change = changes[0]
    assert (change.action, change.target) == ("update", "user alice")
    assert change.before == {"email": "a@elsewhere.org", "enabled": False, "roles": []}
    assert change.after == {
        "email": "alice@example.org",
        "enabled": True,
        "roles": ["DataManager"],
    }
    apply_all(changes)
    assert drift(users.plan(ctx)) == []
    assert sa.state.users["alice"].password == ALICE_PW


def test_extra_roles_and_groups_are_a_note_without_prune(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url))
    apply_all(users.plan(ctx))
    sa.state.users["alice"].roles.append("Dqr")
    sa.state.users["alice"].groups.append("ALL_DATA_ADMIN")
    changes = users.plan(ctx)
    assert drift(changes) == []
    notes = [c for c in changes if c.target.startswith("user alice")]
    assert len(notes) == 1
    assert notes[0].before == {"roles": ["Dqr"], "groups": ["ALL_DATA_ADMIN"]}
    apply_all(changes)
    assert "Dqr" in sa.state.users["alice"].roles


def test_prune_removes_roles_and_groups_not_listed(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url), prune=True)
    apply_all(users.plan(ctx))
    sa.state.users["alice"].roles.append("Dqr")
    sa.state.users["alice"].groups.append("ALL_DATA_ADMIN")
    changes = drift(users.plan(ctx))
    assert len(changes) == 1
    assert changes[0].after == {"roles": ["DataManager"], "groups": ["ALL_DATA_ACCESS"]}
    apply_all(changes)
    assert sa.state.users["alice"].roles == ["DataManager"]
    assert sa.state.users["alice"].groups == ["ALL_DATA_ACCESS"]
    assert drift(users.plan(ctx)) == []


def test_project_groups_are_left_to_the_projects_reconciler(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url, alice()), prune=True)
    apply_all(users.plan(ctx))
    r = requests.post(
        sa.url + "/data/projects",
        data=(
            '<xnat:projectData xmlns:xnat="http://nrg.wustl.edu/xnat" ID="P1" '
            'secondary_ID="P1" name="P1"/>'
        ),
        headers={"Content-Type": "text/xml"},
        auth=AUTH,
        timeout=5,
    )
    assert r.status_code in (200, 201), r.text
    r = requests.put(sa.url + "/data/projects/P1/users/Owners/alice", auth=AUTH, timeout=5)
    assert r.ok, r.text
    assert users.plan(ctx) == []  # P1_owner is not a site group to prune


def test_ldap_user_present_gets_roles_groups_and_enabled(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url, carol(enabled=False)))
    # Carol logged in through LDAP: XNAT created her account with its own profile values.
    sa.state.add_user("carol", None, first_name="C.", last_name="Cook", email="cc@ldap.org")
    changes = users.plan(ctx)
    assert targets(changes) == [("update", "user carol")]
    assert changes[0].after == {"enabled": False, "roles": ["SiteUser"]}  # no profile fields
    apply_all(changes)
    carol_now = sa.state.users["carol"]
    assert carol_now.roles == ["SiteUser"] and carol_now.enabled is False
    assert carol_now.first_name == "C."
    assert users.plan(ctx) == []


def test_create_answering_409_keeps_the_password(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url, alice()))
    changes = users.plan(ctx)
    # Someone creates alice between plan and apply.
    sa.state.add_user("alice", "her-own-pw", first_name="A", last_name="A", email="a@a.org")
    apply_all(changes)
    a = sa.state.users["alice"]
    assert a.password == "her-own-pw"
    assert (a.first_name, a.email) == ("Alice", "alice@example.org")
    assert users.plan(ctx) == []


def test_reserved_accounts_are_skipped_with_a_note(sa: XnatStandin) -> None:
    reserved = [
        alice(username="admin"),
        alice(username="guest"),
        alice(username=SERVICE_USER),
        alice(username="xsync_relay_a"),
    ]
    ctx = context(
        users_desired(sa.url, *reserved, central_accounts=("xsync_relay_a",)),
    )
    changes = users.plan(ctx)
    assert [c.action for c in changes] == ["note"] * 4
    assert sa.requests_log == []


def test_fresh_site_plans_without_requests(sa: XnatStandin) -> None:
    ctx = context(users_desired(sa.url), fresh=True)
    changes = users.plan(ctx)
    assert sa.requests_log == []
    assert targets(changes) == [
        ("create", "user alice"),
        ("create", "user bob"),
        ("note", "user carol"),
    ]


@pytest.mark.parametrize(
    ("people", "passwords", "message"),
    [
        ((alice(), alice()), {"alice": ALICE_PW}, "listed twice"),
        ((alice(),), {}, "no password"),
        ((alice(groups=["P1_owner"]),), {"alice": ALICE_PW}, "project group"),
        ((alice(roles=["Dqr", "Dqr"]),), {"alice": ALICE_PW}, "listed twice"),
    ],
)
def test_invalid_desired_refused_before_any_request(
    sa: XnatStandin,
    people: tuple[XnatUser, ...],
    passwords: dict[str, str],
    message: str,
) -> None:
    d = users_desired(sa.url, *people, user_passwords=passwords)
    caught = refused(sa, lambda: users.plan(context(d)))
    assert message in str(caught)
    assert (caught.host, caught.area) == ("test-host", "users")
    assert sa.requests_log == []

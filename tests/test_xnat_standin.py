"""Tests of the XNAT REST stand-in itself (tests only, NOT XNAT), over real HTTP on 127.0.0.1.

Each XNAT behaviour the stand-in reproduces is asserted here (the upstream source of each is
cited next to it in tests/xnat_standin/server.py), over every stand-in profile where the
behaviour is version-dependent, so that the contract tests of the reconcilers can rely on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.xnat_helpers import SERVICE_USER, desired_for, running_standin
from tests.xnat_standin import STANDIN_NOTICE, STANDIN_PROFILES, XnatStandin
from tests.xnat_standin.state import (
    new_state,
    profile_for_version,
    xsync_build_for_version,
    xsync_history_row,
)

ROOT = Path(__file__).resolve().parents[1]
ADMIN = ("admin", "admin")
SITE = {
    "siteId": "RELAY1",
    "siteUrl": "https://relay1.example.org",
    "adminEmail": "ops@example.org",
    "initialized": True,
}
PROJECT_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<xnat:projectData xmlns:xnat="http://nrg.wustl.edu/xnat" ID="{id}" secondary_ID="{id}_S">'
    "<xnat:name>{id} name</xnat:name><xnat:description>about {id}</xnat:description>"
    "</xnat:projectData>"
)
XML = {"Content-Type": "application/xml"}
TEXT = {"Content-Type": "text/plain"}
JSON_CT = {"Content-Type": "application/json"}
PROFILES = list(STANDIN_PROFILES)
REPLACE_PROFILES = [p for p, s in STANDIN_PROFILES.items() if not s.dicomscp_put_merge]
MERGE_PROFILES = [p for p, s in STANDIN_PROFILES.items() if s.dicomscp_put_merge]
JAVA8_PROFILES = [p for p, s in STANDIN_PROFILES.items() if s.xsync_build == "java8"]
JAVA21_PROFILES = [p for p, s in STANDIN_PROFILES.items() if s.xsync_build == "java21"]


def initialise(url: str, auth: tuple[str, str] = ADMIN) -> None:
    r = requests.post(f"{url}/xapi/siteConfig", json=SITE, auth=auth, timeout=5)
    assert r.status_code == 200, r.text


def create_project(url: str, pid: str, auth: tuple[str, str] = ADMIN) -> requests.Response:
    return requests.post(
        f"{url}/data/projects", data=PROJECT_XML.format(id=pid), headers=XML, auth=auth, timeout=5
    )


def create_user(url: str, username: str, password: str = "pw-" + "x" * 8, **extra: Any) -> None:
    body = {"username": username, "password": password, "email": f"{username}@example.org"}
    r = requests.post(f"{url}/xapi/users", json={**body, **extra}, auth=ADMIN, timeout=5)
    assert r.status_code == 201, r.text


@pytest.fixture
def fresh() -> Iterator[XnatStandin]:
    with XnatStandin() as standin:
        yield standin


@pytest.fixture
def xnat(fresh: XnatStandin) -> XnatStandin:
    initialise(fresh.url)
    return fresh


@pytest.fixture
def session(xnat: XnatStandin) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = ADMIN
        yield s


# -- identity of the stand-in -------------------------------------------------------------------


def test_root_page_and_header_say_it_is_a_standin(xnat: XnatStandin) -> None:
    r = requests.get(xnat.url + "/", timeout=5)
    assert r.status_code == 200
    assert STANDIN_NOTICE in r.text
    assert "NOT XNAT" in r.text
    assert r.headers["X-Standin"] == "xnat-fleet"
    assert xnat.url.startswith("http://127.0.0.1:")
    assert not xnat.url.endswith("/")


def test_unknown_endpoint_is_404_text(session: requests.Session, xnat: XnatStandin) -> None:
    r = session.get(xnat.url + "/xapi/nothing/here")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["X-Standin"] == "xnat-fleet"


def test_requests_log_records_and_redacts_token_secrets(xnat: XnatStandin) -> None:
    token = requests.get(xnat.url + "/data/services/tokens/issue", auth=ADMIN, timeout=5).json()
    url = f"{xnat.url}/data/services/tokens/validate/{token['alias']}/{token['secret']}"
    assert requests.get(url, auth=ADMIN, timeout=5).status_code == 200
    assert ("GET", "/data/services/tokens/issue", 200) in xnat.requests_log
    logged = f"/data/services/tokens/validate/{token['alias']}/(secret)"
    assert ("GET", logged, 200) in xnat.requests_log
    assert all(token["secret"] not in path for _, path, _ in xnat.requests_log)


# -- settings and profiles -----------------------------------------------------------------------


def test_profiles_cover_the_version_matrix_lines() -> None:
    assert set(STANDIN_PROFILES) == {"1.8", "1.9", "1.9-bff1f28", "1.10"}
    for name, prof in STANDIN_PROFILES.items():
        state = new_state(profile=name)
        assert state.profile == name
        assert state.version == prof.version
        assert state.xsync_build == prof.xsync_build
        assert state.dicomscp_put_merge is prof.dicomscp_put_merge
        assert state.site_anon_put_reenables is prof.site_anon_put_reenables
        assert state.smtp_post_500 is prof.smtp_post_500
    assert STANDIN_PROFILES["1.9-bff1f28"].dicomscp_put_merge
    assert STANDIN_PROFILES["1.9-bff1f28"].site_anon_put_reenables
    assert not STANDIN_PROFILES["1.9"].dicomscp_put_merge
    assert STANDIN_PROFILES["1.10"].xsync_build == "java21"


def test_settings_follow_the_version_and_can_be_overridden() -> None:
    assert xsync_build_for_version("1.9.3.6") == "java8"
    assert xsync_build_for_version("1.8.10") == "java8"
    assert xsync_build_for_version("1.10.0") == "java21"
    assert xsync_build_for_version("1.10.1.2") == "java21"
    assert profile_for_version("1.10.2").name == "1.10"
    assert profile_for_version("1.8.3").name == "1.8"
    assert new_state(version="1.10.0").xsync_build == "java21"
    assert new_state().xsync_build == "java8"
    assert new_state(version="1.10.0", xsync_build="java8").xsync_build == "java8"
    state = new_state(profile="1.9", dicomscp_put_merge=True, smtp_post_500=False)
    assert (state.dicomscp_put_merge, state.smtp_post_500) == (True, False)
    with pytest.raises(ValueError, match="profile"):
        new_state(profile="2.0")
    with pytest.raises(ValueError, match="xsync_build"):
        new_state(xsync_build="java11")


def test_running_standin_takes_a_profile() -> None:
    with running_standin(profile="1.10", xsync=True) as relay:
        info = requests.get(relay.url + "/xapi/siteConfig/buildInfo", timeout=5).json()
        assert info["version"] == "1.10.0"
        assert relay.state.xsync_build == "java21"
        # bootstrap on a 1.10 relay grants XsyncAdministrator to the service account
        assert "XsyncAdministrator" in relay.state.users[SERVICE_USER].roles
        assert desired_for(relay).version == "1.10.0"
    with running_standin(profile="1.9", xsync=True) as relay:
        assert "XsyncAdministrator" not in relay.state.users[SERVICE_USER].roles


def test_profile_sa_fixture_runs_once_per_profile(profile_sa: XnatStandin) -> None:
    assert profile_sa.state.profile in STANDIN_PROFILES
    assert profile_sa.state.site_config["initialized"] is True
    assert profile_sa.requests_log == []
    assert profile_sa.state.xsync is False
    r = requests.get(profile_sa.url + "/xapi/siteConfig/buildInfo", timeout=5)
    assert r.json()["version"] == STANDIN_PROFILES[profile_sa.state.profile].version


@pytest.mark.standin(xsync=True, name="relay")
def test_profile_sa_fixture_takes_a_marker(profile_sa: XnatStandin) -> None:
    assert profile_sa.state.xsync is True
    assert profile_sa.state.name == "relay"


@pytest.mark.parametrize("profile_sa", [{"profile": "1.10", "xsync": True}], indirect=True)
def test_profile_sa_fixture_takes_an_indirect_parameter(profile_sa: XnatStandin) -> None:
    assert (profile_sa.state.profile, profile_sa.state.xsync_build) == ("1.10", "java21")


# -- §6 initialisation and authentication --------------------------------------------------------


def test_before_init_json_endpoints_answer_html_setup_page(fresh: XnatStandin) -> None:
    r = requests.get(fresh.url + "/xapi/siteConfig/initialized", auth=ADMIN, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() is False
    # docs/xnat-api.md §6: the trap — 200 with text/html on a JSON endpoint
    for path in ("/xapi/users", "/xapi/dicomscp", "/data/projects?format=json", "/xapi/nope"):
        r = requests.get(fresh.url + path, auth=ADMIN, timeout=5)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith("text/html"), path
    r = requests.get(fresh.url + "/xapi/siteConfig", auth=ADMIN, timeout=5)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["siteId"] == "XNAT"
    # an init URL, not an open one: no credentials -> 401
    r = requests.get(fresh.url + "/xapi/siteConfig/initialized", timeout=5)
    assert r.status_code == 401
    # SMTP read-back is an init URL too
    r = requests.get(fresh.url + "/xapi/notifications/smtp", auth=ADMIN, timeout=5)
    assert r.headers["Content-Type"].startswith("application/json")
    # an open URL is served to anonymous callers even before init
    r = requests.get(fresh.url + "/xapi/siteConfig/buildInfo", timeout=5)
    assert r.status_code == 200
    assert r.json()["version"] == "1.9.3.6"


def test_admin_pre_init_read_fills_a_blank_site_url(fresh: XnatStandin) -> None:
    assert fresh.state.site_config["siteUrl"] == ""
    fresh.state.add_user("bob", "bobpass")
    requests.get(fresh.url + "/xapi/siteConfig", auth=("bob", "bobpass"), timeout=5)
    assert fresh.state.site_config["siteUrl"] == ""  # only an admin's read does it
    config = requests.get(fresh.url + "/xapi/siteConfig", auth=ADMIN, timeout=5).json()
    assert config["siteUrl"] == fresh.url
    assert fresh.state.site_config["siteUrl"] == fresh.url


def test_session_login_works_before_init(fresh: XnatStandin) -> None:
    with requests.Session() as s:
        r = s.post(fresh.url + "/data/JSESSION", auth=ADMIN)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        assert s.get(fresh.url + "/xapi/siteConfig").json()["initialized"] is False
        assert s.get(fresh.url + "/xapi/users").headers["Content-Type"].startswith("text/html")
        assert s.post(fresh.url + "/xapi/siteConfig", json=SITE).status_code == 200
        assert s.get(fresh.url + "/xapi/users").json() == ["admin", "guest"]


def test_init_requires_site_url_then_serves_json(fresh: XnatStandin) -> None:
    url = fresh.url
    r = requests.post(
        f"{url}/xapi/siteConfig", json={"initialized": True, "siteId": "A"}, auth=ADMIN, timeout=5
    )
    assert r.status_code == 400
    assert "siteUrl" in r.text
    assert fresh.state.site_config["initialized"] is False
    assert fresh.state.site_config["siteId"] == "XNAT"  # nothing applied on 400
    initialise(url)
    r = requests.get(f"{url}/xapi/siteConfig/initialized", auth=ADMIN, timeout=5)
    assert r.json() is True
    r = requests.get(f"{url}/xapi/users", auth=ADMIN, timeout=5)
    assert r.headers["Content-Type"].startswith("application/json")
    assert set(r.json()) == {"admin", "guest"}


def test_non_admin_reads_empty_site_config_before_init(fresh: XnatStandin) -> None:
    fresh.state.add_user("bob", "bobpass")
    r = requests.get(fresh.url + "/xapi/siteConfig", auth=("bob", "bobpass"), timeout=5)
    assert r.status_code == 200
    assert r.json() == {}
    r = requests.post(fresh.url + "/xapi/siteConfig", json=SITE, auth=("bob", "bobpass"), timeout=5)
    assert r.status_code == 403


def test_non_admin_reads_the_authenticated_keys_after_init(xnat: XnatStandin) -> None:
    url = xnat.url
    create_user(url, "carol", "carolpw1")
    carol = ("carol", "carolpw1")
    r = requests.get(f"{url}/xapi/siteConfig", auth=carol, timeout=5)
    assert r.status_code == 200  # never 403
    config = r.json()
    assert config  # non-empty: bootstrap must not read "non-empty" as "site admin"
    assert config["siteId"] == "RELAY1"
    assert config["siteUrl"] == SITE["siteUrl"]
    assert config["enableSitewideAnonymizationScript"] is True
    assert "zipExtensions" in config
    for hidden in ("initialized", "archivePath", "adminEmail", "receivedFileUser", "requireLogin"):
        assert hidden not in config, hidden
    assert len(config) < len(requests.get(f"{url}/xapi/siteConfig", auth=ADMIN, timeout=5).json())
    # `initialized` is admin-only
    assert requests.get(
        f"{url}/xapi/siteConfig/initialized", auth=carol, timeout=5
    ).status_code == (403)
    assert requests.get(f"{url}/xapi/siteConfig/siteId", auth=carol, timeout=5).json() == "RELAY1"
    r = requests.get(f"{url}/xapi/siteConfig/archivePath", auth=carol, timeout=5)
    assert r.status_code == 403
    r = requests.get(f"{url}/xapi/siteConfig/values/siteId,archivePath", auth=carol, timeout=5)
    assert r.status_code == 403
    r = requests.get(f"{url}/xapi/siteConfig/values/siteId,siteUrl", auth=carol, timeout=5)
    assert r.json() == {"siteId": "RELAY1", "siteUrl": SITE["siteUrl"]}


def test_admin_password_rotation_makes_initial_password_401(xnat: XnatStandin) -> None:
    url = xnat.url
    r = requests.put(
        f"{url}/xapi/users/admin", json={"password": "N3w-pass"}, auth=ADMIN, timeout=5
    )
    assert r.status_code == 200
    assert "password" not in r.json()
    assert requests.get(f"{url}/xapi/siteConfig", auth=ADMIN, timeout=5).status_code == 401
    r = requests.get(f"{url}/xapi/siteConfig", auth=("admin", "N3w-pass"), timeout=5)
    assert r.status_code == 200
    assert r.json()["siteId"] == "RELAY1"


def test_initial_admin_password_from_constructor() -> None:
    with XnatStandin(initial_admin_password="seeded") as standin:
        assert (
            requests.get(standin.url + "/xapi/siteConfig", auth=ADMIN, timeout=5).status_code == 401
        )
        r = requests.get(standin.url + "/xapi/siteConfig", auth=("admin", "seeded"), timeout=5)
        assert r.status_code == 200


def test_auth_failures(xnat: XnatStandin) -> None:
    url = xnat.url + "/xapi/users"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("admin", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("guest", ""), timeout=5).status_code == 401
    create_user(xnat.url, "carol", "carolpw1")
    assert requests.get(url, auth=("carol", "carolpw1"), timeout=5).status_code == 200
    r = requests.get(
        xnat.url + "/xapi/siteConfig/initialized", auth=("carol", "carolpw1"), timeout=5
    )
    assert r.status_code == 403
    assert requests.put(f"{url}/carol/enabled/false", auth=ADMIN, timeout=5).status_code == 200
    assert requests.get(url, auth=("carol", "carolpw1"), timeout=5).status_code == 401


def test_jsession_cookie_authenticates(xnat: XnatStandin) -> None:
    with requests.Session() as s:
        r = s.post(xnat.url + "/data/JSESSION", auth=ADMIN)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        sid = r.text
        assert s.cookies.get("JSESSIONID") == sid
        r = s.get(xnat.url + "/xapi/users")  # no Basic auth: the cookie only
        assert r.status_code == 200
        assert s.get(xnat.url + "/data/JSESSIONID").text == sid
        assert s.get(xnat.url + "/data/JSESSION").text == sid
    r = requests.get(xnat.url + "/xapi/users", cookies={"JSESSIONID": "bogus"}, timeout=5)
    assert r.status_code == 401


# -- §6 alias tokens -------------------------------------------------------------------------------


def test_alias_token_lifecycle(xnat: XnatStandin) -> None:
    url = xnat.url
    before = time.time() * 1000
    token = requests.get(f"{url}/data/services/tokens/issue", auth=ADMIN, timeout=5).json()
    assert set(token) >= {"alias", "secret", "estimatedExpirationTime", "xdatUserId"}
    two_days = 2 * 86400 * 1000
    assert (
        before + two_days - 5000
        <= token["estimatedExpirationTime"]
        <= time.time() * 1000 + two_days
    )
    pair = (token["alias"], token["secret"])
    assert requests.get(f"{url}/xapi/users", auth=pair, timeout=5).status_code == 200
    # an alias token is HTTP Basic credentials on data paths too (what Xsync relies on)
    assert requests.get(f"{url}/data/JSESSIONID", auth=pair, timeout=5).status_code == 200
    r = requests.get(
        f"{url}/data/services/tokens/validate/{pair[0]}/{pair[1]}", auth=ADMIN, timeout=5
    )
    assert r.json()["valid"] == "admin"
    refreshed = requests.get(
        f"{url}/data/services/tokens/issue/{pair[0]}/{pair[1]}", auth=pair, timeout=5
    ).json()
    assert refreshed["alias"] != token["alias"]
    assert refreshed["xdatUserId"] == token["xdatUserId"]
    r = requests.get(
        f"{url}/data/services/tokens/invalidate/{pair[0]}/{pair[1]}", auth=ADMIN, timeout=5
    )
    assert r.status_code == 200
    assert requests.get(f"{url}/xapi/users", auth=pair, timeout=5).status_code == 401
    r = requests.get(
        f"{url}/data/services/tokens/validate/{pair[0]}/{pair[1]}", auth=ADMIN, timeout=5
    )
    assert r.status_code == 401
    new_pair = (refreshed["alias"], refreshed["secret"])
    assert requests.get(f"{url}/xapi/users", auth=new_pair, timeout=5).status_code == 200
    xnat.state.expire_all_tokens()
    assert requests.get(f"{url}/xapi/users", auth=new_pair, timeout=5).status_code == 401


def test_token_timeout_follows_site_config_and_admin_issue_for_user(xnat: XnatStandin) -> None:
    url = xnat.url
    r = requests.post(
        f"{url}/xapi/siteConfig/aliasTokenTimeout",
        data="3 hours",
        headers=TEXT,
        auth=ADMIN,
        timeout=5,
    )
    assert r.status_code == 200
    create_user(url, "svc", "svcpass1")
    start = time.time() * 1000
    token = requests.get(f"{url}/data/services/tokens/issue/user/svc", auth=ADMIN, timeout=5).json()
    assert abs(token["estimatedExpirationTime"] - (start + 3 * 3600 * 1000)) < 5000
    r = requests.get(
        f"{url}/data/services/tokens/validate/{token['alias']}/{token['secret']}",
        auth=ADMIN,
        timeout=5,
    )
    assert r.json()["valid"] == "svc"
    assert (
        requests.get(
            f"{url}/data/services/tokens/issue/user/nobody", auth=ADMIN, timeout=5
        ).status_code
        == 404
    )
    r = requests.get(
        f"{url}/data/services/tokens/issue/user/admin", auth=("svc", "svcpass1"), timeout=5
    )
    assert r.status_code == 403


# -- §7 site configuration -------------------------------------------------------------------------


def test_site_config_defaults_keys_and_values(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    config = session.get(f"{url}/xapi/siteConfig").json()
    assert config["enableSitewideAnonymizationScript"] is True
    assert config["aliasTokenTimeout"] == "2 days"
    assert config["maxFailedLogins"] == 20
    assert config["siteUrl"] == SITE["siteUrl"]
    r = session.post(f"{url}/xapi/siteConfig/requireLogin", data="false", headers=TEXT)
    assert r.status_code == 200
    assert session.get(f"{url}/xapi/siteConfig/requireLogin").json() is False
    session.post(f"{url}/xapi/siteConfig/maxFailedLogins", json=5)
    assert xnat.state.site_config["maxFailedLogins"] == 5
    session.post(f"{url}/xapi/siteConfig", json={"someNewKey": "v", "par": "false"})
    assert xnat.state.site_config["someNewKey"] == "v"
    assert xnat.state.site_config["par"] is False  # quoted booleans stored natively
    values = session.get(f"{url}/xapi/siteConfig/values/siteId,par").json()
    assert values == {"siteId": "RELAY1", "par": False}
    assert session.get(f"{url}/xapi/siteConfig/buildInfo").json()["version"] == "1.9.3.6"
    assert session.get(f"{url}/xapi/siteConfig/noSuchKey").status_code == 404
    xnat.state.site_config["siteId"] = "DRIFTED"  # tests may mutate state directly
    assert session.get(f"{url}/xapi/siteConfig/siteId").json() == "DRIFTED"


# -- §8 users --------------------------------------------------------------------------------------

SERVICE_BODY = {
    "username": "xnat_fleet",
    "password": "s3cret-pw",
    "firstName": "X",
    "lastName": "F",
    "email": "f@example.org",
    "enabled": True,
    "verified": True,
}


def test_users_roles_groups(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    body = SERVICE_BODY
    assert session.post(f"{url}/xapi/users", json=body).status_code == 201
    assert session.post(f"{url}/xapi/users", json=body).status_code == 409
    assert (
        session.post(
            f"{url}/xapi/users", json={**body, "username": "n", "password": ""}
        ).status_code
        == 400
    )
    assert session.post(f"{url}/xapi/users", json={**body, "username": ""}).status_code == 400
    user = session.get(f"{url}/xapi/users/xnat_fleet").json()
    assert user["email"] == "f@example.org"
    assert "password" not in user
    r = session.put(f"{url}/xapi/users/xnat_fleet", json={"lastName": "Fleet", "enabled": False})
    assert r.json()["lastName"] == "Fleet"
    assert r.json()["firstName"] == "X"  # merged, not replaced
    assert xnat.state.users["xnat_fleet"].enabled is False
    session.put(f"{url}/xapi/users/xnat_fleet/enabled/true")
    assert xnat.state.users["xnat_fleet"].enabled is True
    for role in ("Administrator", "non_expiring"):
        assert session.put(f"{url}/xapi/users/xnat_fleet/roles/{role}").status_code == 200
    assert session.get(f"{url}/xapi/users/xnat_fleet/roles").json() == [
        "Administrator",
        "non_expiring",
    ]
    session.delete(f"{url}/xapi/users/xnat_fleet/roles/non_expiring")
    assert session.get(f"{url}/xapi/users/xnat_fleet/roles").json() == ["Administrator"]
    assert session.put(f"{url}/xapi/users/xnat_fleet/groups/ALL_DATA_ADMIN").status_code == 200
    assert session.put(f"{url}/xapi/users/xnat_fleet/groups/NOPE").status_code == 404
    create_project(url, "P1")
    session.put(f"{url}/xapi/users/xnat_fleet/groups/P1_member")
    groups = session.get(f"{url}/xapi/users/xnat_fleet/groups").json()
    assert groups == ["ALL_DATA_ADMIN", "P1_member"]
    assert xnat.state.projects["P1"].members["xnat_fleet"] == "member"
    # the new admin can work with its own credentials
    assert (
        requests.get(
            f"{url}/xapi/siteConfig", auth=("xnat_fleet", "s3cret-pw"), timeout=5
        ).status_code
        == 200
    )


def test_unknown_user_read_is_500_not_404(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    r = session.get(f"{url}/xapi/users/nobody")
    assert r.status_code == 500
    assert "nobody" in r.text
    # other user endpoints throw UserNotFoundException itself: 404
    assert session.put(f"{url}/xapi/users/nobody", json={"lastName": "x"}).status_code == 404
    assert session.get(f"{url}/xapi/users/nobody/roles").status_code == 404
    create_user(url, "carol", "carolpw1")
    r = requests.get(f"{url}/xapi/users/nobody", auth=("carol", "carolpw1"), timeout=5)
    assert r.status_code == 403  # the @Username check comes first


def test_user_put_answers_304_when_nothing_changed(
    session: requests.Session, xnat: XnatStandin
) -> None:
    url = f"{xnat.url}/xapi/users/xnat_fleet"
    session.post(f"{xnat.url}/xapi/users", json=SERVICE_BODY)
    unchanged = {k: v for k, v in SERVICE_BODY.items() if k != "password"}
    r = session.put(url, json=unchanged)
    assert r.status_code == 304
    assert r.content == b""
    for same in ({"enabled": True}, {"verified": True}, {"lastName": "F"}, {"firstName": ""}):
        assert session.put(url, json=same).status_code == 304, same
    assert session.put(url, json={"password": ""}).status_code == 304  # blank: ignored
    # a password always counts as a change, even the same one
    assert session.put(url, json={"password": "s3cret-pw"}).status_code == 200
    assert session.put(url, json={**unchanged, "enabled": False}).status_code == 200
    assert session.put(url, json={"username": "other", "lastName": "Z"}).status_code == 400
    # restrictTo = Admin: not even the user itself (that is PUT /xapi/users/update)
    create_user(xnat.url, "carol", "carolpw1")
    r = requests.put(
        f"{xnat.url}/xapi/users/carol",
        json={"lastName": "C"},
        auth=("carol", "carolpw1"),
        timeout=5,
    )
    assert r.status_code == 403


def test_disabling_a_user_deactivates_its_tokens(
    session: requests.Session, xnat: XnatStandin
) -> None:
    create_user(xnat.url, "svc", "svcpass1")
    token = requests.get(
        f"{xnat.url}/data/services/tokens/issue", auth=("svc", "svcpass1"), timeout=5
    ).json()
    session.put(f"{xnat.url}/xapi/users/svc", json={"enabled": False})
    session.put(f"{xnat.url}/xapi/users/svc", json={"enabled": True})
    pair = (token["alias"], token["secret"])
    assert requests.get(f"{xnat.url}/xapi/users", auth=pair, timeout=5).status_code == 401
    assert (
        requests.get(f"{xnat.url}/xapi/users", auth=("svc", "svcpass1"), timeout=5).status_code
        == 200
    )


def test_builtin_roles_and_plugin_init_tasks() -> None:
    with XnatStandin(profile="1.10", xsync=True) as relay:
        assert relay.state.users["admin"].roles == ["Administrator", "DataManager", "SiteUser"]
        assert relay.state.users["guest"].roles == ["SiteUser"]
        initialise(relay.url)
        # on initialisation each plugin grants its role to the enabled site admins (nobody
        # held it yet); an account made later does not get it
        assert relay.state.users["admin"].roles == [
            "Administrator",
            "DataManager",
            "SiteUser",
            "ContainerManager",
            "XsyncAdministrator",
        ]
        create_user(relay.url, "svc", "svcpass1")
        requests.put(f"{relay.url}/xapi/users/svc/roles/Administrator", auth=ADMIN, timeout=5)
        relay.state.run_init_tasks()  # a restart: someone holds the roles already
        assert relay.state.users["svc"].roles == ["Administrator"]
    with XnatStandin(profile="1.9", xsync=True) as relay:
        initialise(relay.url)
        assert "XsyncAdministrator" not in relay.state.users["admin"].roles
        assert "ContainerManager" in relay.state.users["admin"].roles


# -- §15 SMTP --------------------------------------------------------------------------------------

SMTP_SERVER = {
    "hostname": "smtp.example.org",
    "port": 587,
    "protocol": "smtp",
    "username": "mailer",
    "password": "mail-pw",
    "mailProperties": {
        "mail.smtp.auth": True,
        "mail.smtp.starttls.enable": True,
        "mail.debug": "true",
    },
}


def _smtp(session: requests.Session, url: str) -> dict[str, Any]:
    data: dict[str, Any] = session.get(f"{url}/xapi/notifications/smtp").json()
    return data


def test_smtp_read_back_is_a_flat_map_of_strings(
    session: requests.Session, xnat: XnatStandin
) -> None:
    # a fresh site: blank username/password and the auth-less mail properties are left out
    assert _smtp(session, xnat.url) == {"hostname": "localhost", "port": "25", "protocol": "smtp"}
    xnat.state.smtp.update(
        hostname="smtp.example.org",
        port=2525,
        username="mailer",
        password="pw",
        mailProperties={
            "mail.smtp.auth": "true",
            "mail.smtp.starttls.enable": "true",
            "mail.smtp.ssl.trust": "*",
            "mail.debug": "false",
        },
    )
    assert _smtp(session, xnat.url) == {
        "hostname": "smtp.example.org",
        "port": "2525",
        "protocol": "smtp",
        "username": "mailer",
        "password": "pw",
        "mail.smtp.auth": "true",
        "mail.smtp.starttls.enable": "true",
        "mail.smtp.ssl.trust": "*",
        "mail.debug": "false",
    }
    # without auth the three auth-related keys are not shown at all
    xnat.state.smtp["mailProperties"]["mail.smtp.auth"] = "false"
    shown = _smtp(session, xnat.url)
    assert "mail.smtp.auth" not in shown and "mail.smtp.starttls.enable" not in shown
    xnat.state.smtp["username"] = ""
    assert "username" not in _smtp(session, xnat.url)


@pytest.mark.parametrize("profile", PROFILES)
def test_smtp_post_stores_part_then_answers_500(profile: str) -> None:
    with XnatStandin(profile=profile) as xnat, requests.Session() as session:
        assert xnat.state.smtp_post_500 is True
        initialise(xnat.url)
        session.auth = ADMIN
        url = f"{xnat.url}/xapi/notifications"
        xnat.state.smtp["mailProperties"]["mail.debug"] = "old"
        r = session.post(url, json={"smtpServer": json.dumps(SMTP_SERVER)})
        assert r.status_code == 500
        assert r.headers["Content-Type"].startswith("text/plain")
        shown = _smtp(session, xnat.url)
        assert {k: shown[k] for k in ("hostname", "port", "username", "password")} == {
            "hostname": "smtp.example.org",
            "port": "587",
            "username": "mailer",
            "password": "mail-pw",
        }
        assert shown["mail.smtp.auth"] == "true"
        assert shown["mail.smtp.starttls.enable"] == "true"
        assert shown["mail.debug"] == "old"  # the other mail properties never got stored
        # with mail.smtp.ssl.trust it gets one step further, and still answers 500
        trust = {"mail.smtp.auth": "true", "mail.smtp.ssl.trust": "smtp.example.org"}
        server = {**SMTP_SERVER, "mailProperties": trust}
        assert session.post(url, json={"smtpServer": json.dumps(server)}).status_code == 500
        assert _smtp(session, xnat.url)["mail.smtp.ssl.trust"] == "smtp.example.org"
        # a field left out (null) stops it there: what came before is stored
        partial = {"hostname": "other.example.org", "port": 25, "protocol": "smtp"}
        assert session.post(url, json={"smtpServer": json.dumps(partial)}).status_code == 500
        assert xnat.state.smtp["hostname"] == "other.example.org"
        assert xnat.state.smtp["username"] == "mailer"
        # must be a JSON *string*; an unparsable one is skipped with 200
        r = session.post(url, json={"smtpServer": {"hostname": "x"}})
        assert r.status_code == 400
        assert session.post(url, json={"smtpServer": "{not json"}).status_code == 200
        assert xnat.state.smtp["hostname"] == "other.example.org"


def test_smtp_post_without_the_quirk_replaces_everything() -> None:
    with XnatStandin(smtp_post_500=False) as xnat, requests.Session() as session:
        initialise(xnat.url)
        session.auth = ADMIN
        xnat.state.smtp["mailProperties"]["mail.smtp.ssl.trust"] = "from-prefs-init"
        r = session.post(
            f"{xnat.url}/xapi/notifications", json={"smtpServer": json.dumps(SMTP_SERVER)}
        )
        assert r.status_code == 200
        assert r.content == b""
        stored = xnat.state.smtp["mailProperties"]
        assert stored == {
            "mail.smtp.auth": "true",
            "mail.smtp.starttls.enable": "true",
            "mail.debug": "true",
        }  # cleared and replaced: the ssl.trust that was not sent is gone
        assert _smtp(session, xnat.url)["mail.debug"] == "true"


# -- §9 projects -----------------------------------------------------------------------------------


def test_projects(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    r = create_project(url, "P1")
    assert r.status_code == 200
    assert create_project(url, "P1").status_code == 409
    r = session.post(f"{url}/data/projects", json={"ID": "P2"})
    assert r.status_code in (400, 415)
    assert "P2" not in xnat.state.projects
    listing = session.get(f"{url}/data/projects?format=json").json()["ResultSet"]["Result"]
    assert [(p["ID"], p["name"], p["secondary_ID"], p["description"]) for p in listing] == [
        ("P1", "P1 name", "P1_S", "about P1")
    ]
    item = session.get(f"{url}/data/projects/P1?format=json").json()["items"][0]
    assert item["data_fields"]["ID"] == "P1"
    assert session.get(f"{url}/data/projects/NOPE?format=json").status_code == 404
    # created protected when the POST names no ?accessibility=
    assert session.get(f"{url}/data/projects/P1/accessibility").text == "protected"
    assert session.put(f"{url}/data/projects/P1/accessibility/private").status_code == 200
    assert session.get(f"{url}/data/projects/P1/accessibility").text == "private"
    r = session.post(
        f"{url}/data/projects?accessibility=private", data=PROJECT_XML.format(id="P3"), headers=XML
    )
    assert r.status_code == 200
    assert xnat.state.projects["P3"].accessibility == "private"
    assert session.put(f"{url}/data/projects/P1/accessibility/open").status_code == 400
    # docs/xnat-api.md §9 quirk: any integer is accepted as a prearchive code
    assert session.put(f"{url}/data/projects/P1/prearchive_code/7").status_code == 200
    assert session.get(f"{url}/data/projects/P1/prearchive_code").text == "7"
    assert xnat.state.projects["P1"].prearchive_code == 7


def _members(session: requests.Session, url: str, pid: str) -> dict[str, str]:
    rows = session.get(f"{url}/data/archive/projects/{pid}/users?format=json").json()
    return {r["login"]: r["GROUP_ID"] for r in rows["ResultSet"]["Result"]}


def test_project_membership(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    create_project(url, "P1")
    create_user(url, "alice")
    assert session.put(f"{url}/data/projects/P1/users/Members/alice").status_code == 200
    assert _members(session, url, "P1") == {"admin": "P1_owner", "alice": "P1_member"}
    session.put(f"{url}/data/projects/P1/users/Owners/alice")  # moves, not adds
    assert xnat.state.projects["P1"].members["alice"] == "owner"
    # the group may also be named by its id
    assert session.put(f"{url}/data/projects/P1/users/P1_collaborator/alice").status_code == 200
    assert xnat.state.projects["P1"].members["alice"] == "collaborator"
    assert session.put(f"{url}/data/projects/P1/users/Nobodies/alice").status_code == 404
    assert session.delete(f"{url}/data/projects/P1/users/Collaborators/alice").status_code == 200
    assert "alice" not in xnat.state.projects["P1"].members


def test_unknown_member_is_invited_not_404(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    create_project(url, "P1")
    r = session.put(f"{url}/data/projects/P1/users/Owners/ghost")
    assert r.status_code == 200
    assert "ghost" not in xnat.state.projects["P1"].members
    assert xnat.state.project_invitations == [("P1", "P1_owner", "ghost")]
    assert session.delete(f"{url}/data/projects/P1/users/Owners/ghost").status_code == 200
    xnat.state.site_config["securityExternalUserParDisabled"] = True
    assert session.put(f"{url}/data/projects/P1/users/Owners/ghost2").status_code == 200
    assert len(xnat.state.project_invitations) == 1
    assert session.put(f"{url}/data/projects/P1/users/Members/guest").status_code == 412


def test_project_users_lists_enabled_members_only(
    session: requests.Session, xnat: XnatStandin
) -> None:
    url = xnat.url
    create_project(url, "P1")
    create_user(url, "alice")
    session.put(f"{url}/data/projects/P1/users/Members/alice")
    session.put(f"{url}/xapi/users/alice/enabled/false")
    assert _members(session, url, "P1") == {"admin": "P1_owner"}
    rows = session.get(f"{url}/data/projects/P1/users?format=json&DISPLAY_HIDDEN_USERS=true")
    assert {r["login"] for r in rows.json()["ResultSet"]["Result"]} == {"admin", "alice"}


def test_project_users_access_rules(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    create_project(url, "P1")
    session.put(f"{url}/data/projects/P1/accessibility/private")
    for user in ("mem", "col", "out"):
        create_user(url, user, f"{user}-password")
    session.put(f"{url}/data/projects/P1/users/Members/mem")
    session.put(f"{url}/data/projects/P1/users/Collaborators/col")
    path = f"{url}/data/archive/projects/P1/users?format=json"

    def status(user: str) -> int:
        return requests.get(path, auth=(user, f"{user}-password"), timeout=5).status_code

    assert status("out") == 404  # a project the user cannot see is "not a valid project ID"
    assert (status("mem"), status("col")) == (200, 200)
    # with an alias token as Basic credentials, like Xsync
    token = requests.get(
        f"{url}/data/services/tokens/issue", auth=("col", "col-password"), timeout=5
    ).json()
    assert requests.get(path, auth=(token["alias"], token["secret"]), timeout=5).status_code == 200
    xnat.state.site_config["restrictUserListAccessToAdmins"] = True
    assert (status("mem"), status("col")) == (200, 403)


def test_version_1_10_empty_site_url_creates_then_500() -> None:
    with XnatStandin(version="1.10.0") as standin:
        initialise(standin.url)
        standin.state.site_config["siteUrl"] = ""
        r = create_project(standin.url, "P9")
        assert r.status_code == 500
        assert "P9" in standin.state.projects  # docs/xnat-api.md §6: created anyway


# -- §10 DICOM SCP receivers -----------------------------------------------------------------------

RECEIVER = {"aeTitle": "RELAY", "port": 8104, "identifier": "dicomObjectIdentifier"}


def test_receiver_create_rules(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    default = session.get(f"{url}/xapi/dicomscp").json()
    assert [(r["aeTitle"], r["port"], r["identifier"]) for r in default] == [
        ("XNAT", 8104, "dicomObjectIdentifier")
    ]
    # no identifier: the bound instance has none -> unknown DICOM object identifier
    r = session.post(f"{url}/xapi/dicomscp", json={"aeTitle": "RELAY", "port": 8104})
    assert r.status_code == 400
    r = session.post(f"{url}/xapi/dicomscp", json={**RECEIVER, "whitelistText": "x"})
    assert r.status_code == 200  # another AE on the same port: silently accepted (quirk)
    created = r.json()
    assert created["anonymizationEnabled"] is True and created["enabled"] is True
    assert "whitelistText" not in created
    assert "fileNamer" not in created  # null fields are left out of the JSON
    assert "projectRoutingExpression" not in created
    r = session.post(f"{url}/xapi/dicomscp", json=RECEIVER)
    assert r.status_code == 400  # duplicate AE title + port: 400, not 409
    rid = created["id"]
    assert session.put(f"{url}/xapi/dicomscp/{rid}/enabled/false").status_code == 200
    assert session.get(f"{url}/xapi/dicomscp/{rid}/enabled").json() is False
    assert session.post(f"{url}/xapi/dicomscp", json=RECEIVER).status_code == 400  # even so
    for bad in ("back\\slash", "X" * 17, " LEADING", ""):
        r = session.post(f"{url}/xapi/dicomscp", json={**RECEIVER, "aeTitle": bad, "port": 1})
        assert r.status_code == 400, bad
    r = session.post(f"{url}/xapi/dicomscp", json={**RECEIVER, "port": 11112, "aeTitle": None})
    assert r.status_code == 500  # a null AE title: NullPointerException
    good = {**RECEIVER, "port": 11113, "whitelist": ["PACS", "10.0.0.0/8", "PACS@10.1.2.3"]}
    r = session.post(f"{url}/xapi/dicomscp", json=good)
    assert r.status_code == 200
    assert r.json()["whitelist"] == ["PACS", "10.0.0.0/8", "PACS@10.1.2.3"]
    bad_list = {**good, "port": 11114, "whitelist": ["PACS@not-an-ip"]}
    assert session.post(f"{url}/xapi/dicomscp", json=bad_list).status_code == 400
    assert session.delete(f"{url}/xapi/dicomscp/{rid}").status_code == 200
    assert session.get(f"{url}/xapi/dicomscp/{rid}").status_code == 404


def _receiver_on(profile: str) -> tuple[XnatStandin, requests.Session, int]:
    standin = XnatStandin(profile=profile)
    standin.start()
    initialise(standin.url)
    session = requests.Session()
    session.auth = ADMIN
    body = {**RECEIVER, "port": 11112, "anonymizationEnabled": False, "fileNamer": "n"}
    rid = int(session.post(f"{standin.url}/xapi/dicomscp", json=body).json()["id"])
    session.put(f"{standin.url}/xapi/dicomscp/{rid}/enabled/false")
    return standin, session, rid


@pytest.mark.parametrize("profile", REPLACE_PROFILES)
def test_receiver_put_replaces_with_the_body(profile: str) -> None:
    standin, session, rid = _receiver_on(profile)
    try:
        url = f"{standin.url}/xapi/dicomscp/{rid}"
        assert session.put(url, json={"port": 11112}).status_code == 400  # no identifier
        r = session.put(url, json={"port": 11112, "identifier": "dicomObjectIdentifier"})
        assert r.status_code == 500  # no aeTitle
        assert standin.state.receivers[rid]["enabled"] is False  # nothing stored
        r = session.put(url, json={"aeTitle": "RELAY", "identifier": "dicomObjectIdentifier"})
        assert r.status_code == 200
        replaced = r.json()
        assert replaced["port"] == 0  # left out -> 0, stored
        assert replaced["enabled"] is True  # left out -> class default
        assert replaced["anonymizationEnabled"] is True
        assert "fileNamer" not in replaced
        assert standin.state.receivers[rid]["port"] == 0
        # the duplicate check skips the receiver itself but not the others
        r = session.put(url, json={**RECEIVER, "aeTitle": "XNAT"})
        assert r.status_code == 400
    finally:
        session.close()
        standin.stop()


@pytest.mark.parametrize("profile", MERGE_PROFILES)
def test_receiver_put_merges_on_bff1f28(profile: str) -> None:
    standin, session, rid = _receiver_on(profile)
    try:
        r = session.put(f"{standin.url}/xapi/dicomscp/{rid}", json={"port": 11115})
        assert r.status_code == 200
        merged = r.json()
        assert (merged["aeTitle"], merged["port"], merged["enabled"]) == ("RELAY", 11115, False)
        assert merged["anonymizationEnabled"] is False
        assert merged["fileNamer"] == "n"
        r = session.put(
            f"{standin.url}/xapi/dicomscp/{rid}", json={"aeTitle": "XNAT", "port": 8104}
        )
        assert r.status_code == 400  # still validated: duplicate of the default receiver
    finally:
        session.close()
        standin.stop()


# -- §11 anonymization -----------------------------------------------------------------------------

SCRIPT = 'version "6.1"\n(0010,0010) := subject\n'


def test_anonymization_defaults(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    default = session.get(f"{url}/xapi/anonymize/default")
    assert default.headers["Content-Type"].startswith("text/plain")
    assert 'version "6.1"' in default.text
    assert "(0008,1030)" in default.text
    assert session.get(f"{url}/xapi/anonymize/site").text == default.text
    assert session.get(f"{url}/xapi/anonymize/site/enabled").json() is True
    r = session.put(f"{url}/xapi/anonymize/site", data=SCRIPT, headers=JSON_CT)
    assert r.status_code == 415  # consumes text/plain
    assert session.put(f"{url}/xapi/anonymize/site", data=SCRIPT, headers=TEXT).status_code == 200
    assert xnat.state.site_config["sitewideAnonymizationScript"] == SCRIPT


@pytest.mark.parametrize("profile", PROFILES)
def test_anon_enabled_puts_consume_json(profile: str) -> None:
    with XnatStandin(profile=profile) as xnat, requests.Session() as s:
        initialise(xnat.url)
        s.auth = ADMIN
        url = f"{xnat.url}/xapi/anonymize"
        create_project(xnat.url, "P1")
        for path in ("site/enabled", "projects/P1/enabled"):
            assert s.put(f"{url}/{path}?enable=false").status_code == 415, path  # none
            r = s.put(f"{url}/{path}?enable=false", data="false", headers=TEXT)
            assert r.status_code == 415, path
        assert xnat.state.site_config["enableSitewideAnonymizationScript"] is True
        # the value comes from the query parameter; the body may be empty
        assert s.put(f"{url}/site/enabled?enable=false", headers=JSON_CT).status_code == 200
        assert s.get(f"{url}/site/enabled").json() is False
        assert s.put(f"{url}/site/enabled", data="false", headers=JSON_CT).status_code == 200
        assert s.get(f"{url}/site/enabled").json() is True  # enable defaults to true
        # a project that never had a script: 500
        r = s.put(f"{url}/projects/P1/enabled?enable=false", headers=JSON_CT)
        assert r.status_code == 500
        s.put(f"{url}/projects/P1", data=SCRIPT, headers=TEXT)
        r = s.put(f"{url}/projects/P1/enabled?enable=false", headers=JSON_CT)
        assert r.status_code == 200
        assert s.get(f"{url}/projects/P1/enabled").json() is False


@pytest.mark.parametrize("profile", PROFILES)
def test_anon_script_and_flag_are_one_entry(profile: str) -> None:
    with XnatStandin(profile=profile) as xnat, requests.Session() as s:
        initialise(xnat.url)
        s.auth = ADMIN
        url = f"{xnat.url}/xapi/anonymize"
        create_project(xnat.url, "P1")
        # project: no script -> 204; a write enables it, always
        assert s.get(f"{url}/projects/P1").status_code == 204
        assert s.get(f"{url}/projects/P1/enabled").json() is False
        s.put(f"{url}/projects/P1", data=SCRIPT, headers=TEXT)
        assert s.get(f"{url}/projects/P1").text == SCRIPT
        assert s.get(f"{url}/projects/P1/enabled").json() is True
        s.put(f"{url}/projects/P1/enabled?enable=false", headers=JSON_CT)
        assert s.get(f"{url}/projects/P1").status_code == 204  # disabled reads as none
        s.put(f"{url}/projects/P1", data=SCRIPT, headers=TEXT)
        assert s.get(f"{url}/projects/P1/enabled").json() is True  # re-enabled by the write
        # site: a disabled script reads as an empty 200
        s.put(f"{url}/site/enabled?enable=false", headers=JSON_CT)
        r = s.get(f"{url}/site")
        assert (r.status_code, r.text) == (200, "")
        s.put(f"{url}/site", data=SCRIPT, headers=TEXT)
        reenables = STANDIN_PROFILES[profile].site_anon_put_reenables
        assert s.get(f"{url}/site/enabled").json() is reenables
        assert s.get(f"{url}/site").text == (SCRIPT if reenables else "")
        assert xnat.state.site_config["sitewideAnonymizationScript"] == SCRIPT


def test_anon_project_reads_need_read_access_writes_owner(
    session: requests.Session, xnat: XnatStandin
) -> None:
    url = xnat.url
    create_project(url, "P1")
    create_user(url, "mem", "mem-password")
    session.put(f"{url}/data/projects/P1/users/Members/mem")
    session.put(f"{url}/xapi/anonymize/projects/P1", data=SCRIPT, headers=TEXT)
    mem = ("mem", "mem-password")
    assert requests.get(f"{url}/xapi/anonymize/projects/P1", auth=mem, timeout=5).text == SCRIPT
    assert requests.get(f"{url}/xapi/anonymize/site/enabled", auth=mem, timeout=5).json() is True
    r = requests.put(
        f"{url}/xapi/anonymize/projects/P1", data="x", headers=TEXT, auth=mem, timeout=5
    )
    assert r.status_code == 403


# -- §12 events ------------------------------------------------------------------------------------

SUBSCRIPTION = {
    "name": "dcm2niix",
    "active": True,
    "action-key": "org.nrg.containers.services.CommandActionProvider:1",
    "attributes": {},
    "act-as-event-user": False,
    "event-filter": {
        "event-type": "org.nrg.xnat.eventservice.events.ScanEvent",
        "status": "CREATED",
        "project-ids": ["P1"],
    },
}


def test_event_service_disabled(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    assert session.get(f"{url}/xapi/events/prefs").json() == {"enabled": False}
    r = session.get(f"{url}/xapi/events/subscriptions")
    assert r.status_code == 200
    assert r.content == b""  # null, not []
    r = session.post(f"{url}/xapi/events/subscription", json=SUBSCRIPTION)
    assert r.status_code == 405
    assert r.text == "Event Service disabled."
    xnat.state.subscriptions[7] = {**SUBSCRIPTION, "id": 7}
    assert session.get(f"{url}/xapi/events/subscription/7").status_code == 405
    assert session.put(f"{url}/xapi/events/subscription/7", json={}).status_code == 405
    assert session.delete(f"{url}/xapi/events/subscription/7").status_code == 405


def test_event_subscriptions(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    r = session.put(f"{url}/xapi/events/prefs", json={"enabled": True})
    assert (r.status_code, r.content) == (200, b"")
    r = session.post(f"{url}/xapi/events/subscription", json=SUBSCRIPTION)
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("text/plain")
    name, _, first_id = r.text.rpartition(":")
    assert name == "dcm2niix"
    r2 = session.post(f"{url}/xapi/events/subscription", json=SUBSCRIPTION)  # duplicate accepted
    assert r2.status_code == 201
    listed = session.get(f"{url}/xapi/events/subscriptions").json()
    assert [s["name"] for s in listed] == ["dcm2niix", "dcm2niix"]
    stored = session.get(f"{url}/xapi/events/subscription/{first_id}").json()
    assert stored["subscription-owner"] == "admin"
    assert stored["valid"] is True
    assert "created" in stored
    r = session.put(f"{url}/xapi/events/subscription/{first_id}", json={"active": False})
    assert (r.status_code, r.content) == (200, b"")
    assert xnat.state.subscriptions[int(first_id)]["active"] is False
    session.post(f"{url}/xapi/events/subscription/{first_id}/activate")
    assert xnat.state.subscriptions[int(first_id)]["active"] is True
    assert session.delete(f"{url}/xapi/events/subscription/{first_id}").status_code == 204
    assert len(session.get(f"{url}/xapi/events/subscriptions").json()) == 1


# -- §13 container service -------------------------------------------------------------------------


def test_container_service(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    backend = {
        "name": "docker",
        "host": "tcp://10.0.0.5:2376",
        "backend": "docker",
        "path-translation-xnat-prefix": "/data/xnat",
        "path-translation-docker-prefix": "/d",
    }
    r = session.post(f"{url}/xapi/docker/server", json=backend)
    assert r.status_code == 201
    assert r.json()["host"] == "tcp://10.0.0.5:2376"
    assert session.get(f"{url}/xapi/docker/server").json()["path-translation-docker-prefix"] == "/d"
    assert session.get(f"{url}/xapi/docker/server/ping").text == "OK"
    command = {"name": "dcm2niix", "image": "x/dcm2niix:1", "xnat": [{"name": "scan-to-nifti"}]}
    r = session.post(f"{url}/xapi/commands", json=command)
    assert r.status_code == 201
    cid = int(r.text)  # bare numeric id (quirk)
    assert session.post(f"{url}/xapi/commands", json={"name": "bad"}).status_code == 400
    found = session.get(f"{url}/xapi/commands?name=dcm2niix").json()
    assert [c["id"] for c in found] == [cid]
    assert isinstance(found[0]["xnat"][0]["id"], int)
    assert session.get(f"{url}/xapi/commands?name=other").json() == []
    # the update is POST /commands/{id}; there is no PUT
    assert session.put(f"{url}/xapi/commands/{cid}", json=command).status_code == 405
    r = session.post(f"{url}/xapi/commands/{cid}", json={**command, "image": "x/dcm2niix:2"})
    assert (r.status_code, r.content) == (200, b"")
    assert xnat.state.commands[cid]["image"] == "x/dcm2niix:2"
    w = f"{url}/xapi/commands/{cid}/wrappers/scan-to-nifti"
    assert session.get(f"{w}/enabled").json() is False
    assert session.put(f"{w}/enabled").status_code == 200
    assert session.get(f"{w}/enabled").json() is True
    create_project(url, "P1")
    pw = f"{url}/xapi/projects/P1/commands/{cid}/wrappers/scan-to-nifti"
    # a ProjectEnabledReport, not a bare boolean
    report = {"enabled-for-site": True, "enabled-for-project": False, "project": "P1"}
    assert session.get(f"{pw}/enabled").json() == report
    session.put(f"{pw}/enabled")
    assert session.get(f"{pw}/enabled").json()["enabled-for-project"] is True
    session.put(f"{w}/disabled")
    assert session.get(f"{pw}/enabled").json() == {
        **report,
        "enabled-for-site": False,
        "enabled-for-project": True,
    }
    session.put(f"{pw}/disabled")
    assert session.get(f"{pw}/enabled").json()["enabled-for-project"] is False
    assert session.delete(f"{url}/xapi/commands/{cid}").status_code == 204
    assert session.delete(f"{url}/xapi/commands/424242").status_code == 204  # missing: "succeeds"
    assert session.get(f"{url}/xapi/commands").json() == []


def test_commands_need_container_manager(xnat: XnatStandin) -> None:
    url = xnat.url
    command = {"name": "c", "xnat": [{"name": "w"}]}
    xnat.state.commands[1] = {**command, "id": 1, "xnat": [{"name": "w", "id": 1}]}
    xnat.state.commands[2] = {"name": "p", "visibility": "public", "id": 2, "xnat": []}
    create_user(url, "runner", "runnerpw")
    create_user(url, "boss", "bosspw11")
    requests.put(f"{url}/xapi/users/boss/roles/Administrator", auth=ADMIN, timeout=5)
    for user in (("runner", "runnerpw"), ("boss", "bosspw11")):  # no admin bypass
        listed = requests.get(f"{url}/xapi/commands", auth=user, timeout=5)
        assert [c["id"] for c in listed.json()] == [2]  # filtered, not 403
        assert (
            requests.post(f"{url}/xapi/commands", json=command, auth=user, timeout=5).status_code
            == 401
        )
        assert requests.delete(f"{url}/xapi/commands/1", auth=user, timeout=5).status_code == 401
        r = requests.get(f"{url}/xapi/commands/1/wrappers/w/enabled", auth=user, timeout=5)
        assert r.status_code == 403
        r = requests.post(f"{url}/xapi/docker/server", json={"host": "x"}, auth=user, timeout=5)
        assert r.status_code == 403
    requests.put(f"{url}/xapi/users/runner/roles/ContainerManager", auth=ADMIN, timeout=5)
    listed = requests.get(f"{url}/xapi/commands", auth=("runner", "runnerpw"), timeout=5)
    assert [c["id"] for c in listed.json()] == [1, 2]
    xnat.state.commands_require_container_manager = False  # the looser, non-XNAT mode
    assert (
        requests.delete(f"{url}/xapi/commands/1", auth=("boss", "bosspw11"), timeout=5).status_code
        == 204
    )


# -- §14 plugins / §16 Xsync availability ----------------------------------------------------------


def test_plugins_and_xsync_only_when_enabled(session: requests.Session, xnat: XnatStandin) -> None:
    plugins = session.get(xnat.url + "/xapi/plugins").json()
    assert set(plugins) == {"containers"}  # a map keyed by plugin id
    assert session.get(xnat.url + "/xapi/xsyncSitePreferences").status_code == 404
    for profile, version in (("1.9", "1.8.1"), ("1.10", "1.8.2-SNAPSHOT"), ("1.8", "1.5.0")):
        with XnatStandin(profile=profile, xsync=True) as relay:
            initialise(relay.url)
            plugins = requests.get(relay.url + "/xapi/plugins", auth=ADMIN, timeout=5).json()
            assert "xsync" not in plugins
            assert plugins["xsyncPlugin"]["id"] == "xsyncPlugin"
            assert plugins["xsyncPlugin"]["version"] == version
            r = requests.get(relay.url + "/xapi/plugins/xsyncPlugin", auth=ADMIN, timeout=5)
            assert r.json()["name"] == "XSync Plugin"


# -- §16 Xsync -------------------------------------------------------------------------------------


def _relay(profile: str) -> XnatStandin:
    standin = XnatStandin(profile=profile, xsync=True, name="relay")
    standin.start()
    initialise(standin.url)
    assert create_project(standin.url, "RP").status_code == 200
    return standin


@pytest.fixture(params=PROFILES)
def relay(request: pytest.FixtureRequest) -> Iterator[XnatStandin]:
    standin = _relay(request.param)
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def central() -> Iterator[XnatStandin]:
    with XnatStandin(name="central") as standin:
        initialise(standin.url)
        r = requests.post(
            f"{standin.url}/data/projects?accessibility=private",
            data=PROJECT_XML.format(id="CP"),
            headers=XML,
            auth=ADMIN,
            timeout=5,
        )
        assert r.status_code == 200
        for user in ("own", "mem", "col", "out", "all"):
            create_user(standin.url, user, f"{user}-password")
        for level, user in (("Owners", "own"), ("Members", "mem"), ("Collaborators", "col")):
            r = requests.put(
                f"{standin.url}/data/projects/CP/users/{level}/{user}", auth=ADMIN, timeout=5
            )
            assert r.status_code == 200
        standin.state.users["all"].groups.append("ALL_DATA_ACCESS")
        yield standin


def _post(relay: XnatStandin, path: str, body: Any, **kwargs: Any) -> requests.Response:
    """POST a JSON document the way the relay's plugin build wants it."""
    if relay.state.xsync_build == "java21":
        return requests.post(relay.url + path, json=body, timeout=10, **kwargs)
    return requests.post(
        relay.url + path, data=json.dumps(body), headers=TEXT, timeout=10, **kwargs
    )


def _post_wrong(relay: XnatStandin, path: str, body: Any) -> requests.Response:
    """The other build's content type."""
    if relay.state.xsync_build == "java21":
        return requests.post(
            relay.url + path, data=json.dumps(body), headers=TEXT, auth=ADMIN, timeout=10
        )
    return requests.post(relay.url + path, json=body, auth=ADMIN, timeout=10)


def xsync_config(source: str = "RP", remote: str = "https://central.example.org") -> dict[str, Any]:
    return {
        "enabled": True,
        "source_project_id": source,
        "remote_url": remote,
        "remote_project_id": "CP",
        "sync_frequency": "on demand",
        "sync_new_only": True,
        "identifiers": "use_local",
        "imaging_sessions": {"sync_type": "all"},
    }


@pytest.mark.parametrize("profile", JAVA8_PROFILES)
def test_xsync_site_preferences_java8(profile: str) -> None:
    relay = _relay(profile)
    try:
        url = "/xapi/xsyncSitePreferences"
        prefs = requests.get(relay.url + url, auth=ADMIN, timeout=5).json()
        assert prefs["tokenRefreshInterval"] == "10 hours"
        assert prefs["syncRetryCount"] == "2"
        assert prefs["syncMaxUncompressedZipFileSize"] == "-1"  # Properties: strings
        r = requests.post(relay.url + url, json={"syncRetryCount": 3}, auth=ADMIN, timeout=5)
        assert r.status_code == 415  # consumes text/plain
        for bad in ("4 minutes", "2 days", "ten hours", "10hours"):
            r = _post(relay, url, {"tokenRefreshInterval": bad}, auth=ADMIN)
            assert r.status_code == 500, bad  # the setter throws: "assignment failed"
        r = _post(relay, url, {"syncRetryInterval": "1 hour", "syncRetryCount": 3}, auth=ADMIN)
        assert (r.status_code, r.text) == (200, "XSync preferences set")
        assert relay.state.xsync_site_prefs["syncRetryInterval"] == "1 hour"
        assert relay.state.xsync_site_prefs["syncRetryCount"] == "3"
        create_user(relay.url, "bob", "bobpass1")
        assert requests.get(relay.url + url, auth=("bob", "bobpass1"), timeout=5).status_code == 403
        # any site admin passes: there is no XsyncAdministrator role on these builds
        requests.put(f"{relay.url}/xapi/users/bob/roles/Administrator", auth=ADMIN, timeout=5)
        assert "XsyncAdministrator" not in relay.state.users["admin"].roles
        assert requests.get(relay.url + url, auth=("bob", "bobpass1"), timeout=5).status_code == 200
    finally:
        relay.stop()


@pytest.mark.parametrize("profile", JAVA21_PROFILES)
def test_xsync_site_preferences_java21_need_the_role(profile: str) -> None:
    relay = _relay(profile)
    try:
        url = relay.url + "/xapi/xsyncSitePreferences"
        create_user(relay.url, "boss", "bosspw11")
        requests.put(f"{relay.url}/xapi/users/boss/roles/Administrator", auth=ADMIN, timeout=5)
        boss = ("boss", "bosspw11")
        assert requests.get(url, auth=boss, timeout=5).status_code == 403  # no admin bypass
        r = requests.post(url, json={"syncRetryCount": "3"}, auth=boss, timeout=5)
        assert r.status_code == 403
        # the built-in admin got the role from the init task
        assert requests.get(url, auth=ADMIN, timeout=5).json()["tokenRefreshInterval"] == "10 hours"
        r = requests.post(url, data='{"syncRetryCount": "3"}', headers=TEXT, auth=ADMIN, timeout=5)
        assert r.status_code == 415  # consumes application/json
        requests.put(f"{relay.url}/xapi/users/boss/roles/XsyncAdministrator", auth=ADMIN, timeout=5)
        r = requests.post(url, json={"syncRetryCount": "3"}, auth=boss, timeout=5)
        assert (r.status_code, r.content) == (200, b"")
        assert relay.state.xsync_site_prefs["syncRetryCount"] == "3"
        for bad in ({"syncMaxUncompressedZipFileSize": 0}, {"tokenRefreshInterval": "4 minutes"}):
            assert requests.post(url, json=bad, auth=boss, timeout=5).status_code == 500, bad
    finally:
        relay.stop()


def test_xsync_setup_per_build(relay: XnatStandin) -> None:
    path = "/xapi/xsync/setup/projects/RP"
    r = requests.get(relay.url + path, auth=ADMIN, timeout=5)
    if relay.state.xsync_build == "java21":
        assert (r.status_code, r.content) == (200, b"")
    else:
        assert r.status_code == 404
    assert _post_wrong(relay, path, xsync_config()).status_code == 415
    assert _post(relay, path, xsync_config(source="OTHER"), auth=ADMIN).status_code == 400
    assert _post(relay, path, xsync_config(), auth=ADMIN).status_code == 200
    assert requests.get(relay.url + path, auth=ADMIN, timeout=5).json()["remote_project_id"] == "CP"


def _issue(central: XnatStandin, user: str) -> dict[str, Any]:
    r = requests.get(
        f"{central.url}/data/services/tokens/issue", auth=(user, f"{user}-password"), timeout=5
    )
    assert r.status_code == 200
    token: dict[str, Any] = r.json()
    return token


def _credentials(host: str, user: str, token: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": host,
        "localProject": "RP",
        "remoteProject": "CP",
        "syncNewOnly": True,
        "alias": token["alias"],
        "secret": token["secret"],
        "username": user,
        "estimatedExpirationTime": token["estimatedExpirationTime"],
    }


SAVE = "/xapi/xsync/credentials/save/projects/RP"
CHECK = "/xapi/xsync/credentials/check/projects/RP"


def _save(relay: XnatStandin, central: XnatStandin, user: str, token: dict[str, Any]) -> Any:
    return _post(relay, SAVE, _credentials(central.url, user, token), auth=ADMIN)


def test_xsync_credential_save_levels(relay: XnatStandin, central: XnatStandin) -> None:
    r = _save(relay, central, "own", _issue(central, "own"))
    assert (r.status_code, r.text) == (200, "XSync remote credentials set.")
    assert (relay.state.xsync_credentials[("RP", central.url)]["username"]) == "own"
    assert _save(relay, central, "mem", _issue(central, "mem")).status_code == 202
    assert relay.state.xsync_credentials[("RP", central.url)]["username"] == "mem"
    assert _save(relay, central, "col", _issue(central, "col")).status_code == 403
    # listed nowhere, but the list is readable (All Data Access): 202
    assert _save(relay, central, "all", _issue(central, "all")).status_code == 202
    # no access to the (private) central project: the users list answers 404 -> 403
    r = _save(relay, central, "out", _issue(central, "out"))
    assert r.status_code == 403
    assert "does not have access to the project CP" in r.text
    assert relay.state.xsync_credentials[("RP", central.url)]["username"] == "all"
    # the relay asked the central with the token as Basic auth, not the validate endpoint
    log = central.requests_log
    assert ("GET", "/data/archive/projects/CP/users", 200) in log
    assert ("GET", "/data/archive/projects/CP/users", 404) in log
    assert not any(path.startswith("/data/services/tokens/validate") for _, path, _ in log)
    token = _issue(central, "own")
    token["secret"] = "wrong"
    assert _save(relay, central, "own", token).status_code == 403  # 401 from the central
    r = _post(relay, SAVE, {"host": central.url}, auth=ADMIN)
    assert r.status_code == 400
    assert "Incomplete information" in r.text
    assert _post_wrong(relay, SAVE, {"host": central.url}).status_code == 415


def test_xsync_credential_save_unreachable_central(relay: XnatStandin) -> None:
    token = {"alias": "a", "secret": "s", "estimatedExpirationTime": 0}
    r = _post(relay, SAVE, _credentials("http://127.0.0.1:9", "own", token), auth=ADMIN)
    assert r.status_code == 403  # an IOException on the connection
    assert relay.state.xsync_credentials == {}


def test_xsync_credential_check(relay: XnatStandin, central: XnatStandin) -> None:
    body = {"host": central.url, "localProject": "RP"}
    r = _post(relay, CHECK, body, auth=ADMIN)
    if relay.state.xsync_build == "java21":
        assert (r.status_code, r.text) == (403, "Check project configuration")
    else:
        assert (r.status_code, r.text) == (400, "Could not connect")
    assert _post_wrong(relay, CHECK, body).status_code == 415
    token = _issue(central, "own")
    assert _save(relay, central, "own", token).status_code == 200
    r = _post(relay, CHECK, body, auth=ADMIN)
    assert r.status_code == 200
    assert r.text in central.state.sessions
    assert central.state.sessions[r.text] == "own"
    assert ("GET", "/data/JSESSIONID", 200) in central.requests_log
    central.state.expire_all_tokens()  # e.g. relay shipped and stored too long (§16.6)
    r = _post(relay, CHECK, body, auth=ADMIN)
    assert r.status_code == 400
    assert "Could not connect" in r.text
    assert _post(relay, CHECK, {"host": central.url}, auth=ADMIN).status_code == 400


def test_xsync_remote_rest_issues_token_on_central(
    relay: XnatStandin, central: XnatStandin
) -> None:
    body = {
        "url": f"{central.url}/data/services/tokens/issue",
        "method": "GET",
        "username": "own",
        "password": "own-password",
    }
    r = requests.post(f"{relay.url}/xapi/xsync/remoteREST", json=body, auth=ADMIN, timeout=10)
    assert r.status_code == 200
    token = json.loads(r.text)
    assert central.state.tokens[token["alias"]].username == "own"
    r = requests.post(
        f"{relay.url}/xapi/xsync/remoteREST",
        json={**body, "password": "bad"},
        auth=ADMIN,
        timeout=10,
    )
    assert r.status_code == 401


def test_xsync_sync_status_and_history(relay: XnatStandin) -> None:
    url = relay.url + "/xapi/xsync"
    # in-memory ProjectSyncStatus; answered for any readable project, configured or not
    status = requests.get(f"{url}/syncStatus/projects/RP", auth=ADMIN, timeout=5).json()
    assert status == {
        "isSyncing": False,
        "syncType": "NONE_SINCE_STARTUP",
        "historyId": 0,
        "initialSubjectList": [],
        "completedSubjects": [],
        "failedSubjects": [],
        "completedExperiments": {},
        "failedExperiments": {},
    }  # null fields (syncStartTime, wasSyncSuccessful, ...) are left out
    end = dt.datetime(2024, 3, 5, 14, 7, 9)
    relay.state.xsync_status["RP"] = {
        "syncType": "PROJECT_SYNC",
        "syncStartTime": int(end.timestamp() * 1000),
        "syncEndTime": end,
        "wasSyncSuccessful": True,
        "status": "SYNCED_AND_VERIFIED",  # not a ProjectSyncStatus key: not shown
    }
    status = requests.get(f"{url}/syncStatus/projects/RP", auth=ADMIN, timeout=5).json()
    assert status["syncEndTime"] == "2024-03-05 02:07:09"  # yyyy-MM-dd hh:mm:ss (12-hour)
    assert status["syncStartTime"] == "2024-03-05 02:07:09"
    assert status["wasSyncSuccessful"] is True
    assert "status" not in status and "lastSync" not in status
    assert requests.get(f"{url}/syncStatus/projects/NOPE", auth=ADMIN, timeout=5).status_code == 404
    # no plugin version maps /xsync/status/projects/{p}
    assert requests.get(f"{url}/status/projects/RP", auth=ADMIN, timeout=5).status_code == 404
    relay.state.xsync_history.extend(
        [xsync_history_row("RP", "FAILED", id=1), xsync_history_row("OTHER", "SYNCED", id=2)]
    )
    rows = requests.get(f"{url}/history/projects/RP", auth=ADMIN, timeout=5).json()
    assert [(h["id"], h["localProject"], h["syncStatus"]) for h in rows] == [(1, "RP", "FAILED")]
    assert {"startDate", "completeDate", "remoteHost", "remoteProject", "syncUser"} <= set(rows[0])
    assert len(requests.get(f"{url}/history", auth=ADMIN, timeout=5).json()) == 2


def test_xsync_operations(relay: XnatStandin) -> None:
    url = relay.url + "/xapi/xsync"
    assert requests.post(f"{url}/unblock/RP", auth=ADMIN, timeout=5).status_code == 404
    assert requests.post(f"{url}/projects/RP", auth=ADMIN, timeout=5).status_code == 404
    _post(relay, "/xapi/xsync/setup/projects/RP", xsync_config(), auth=ADMIN)
    assert [
        c["source_project_id"]
        for c in requests.get(f"{url}/projects", auth=ADMIN, timeout=5).json()
    ] == ["RP"]
    relay.state.xsync_blocked["RP"] = True
    assert requests.post(f"{url}/unblock/RP", auth=ADMIN, timeout=5).status_code == 200
    assert not relay.state.xsync_blocked.get("RP")
    r = requests.post(f"{url}/projects/RP", auth=ADMIN, timeout=5)
    assert r.text == "RP synchronization started"
    assert relay.state.xsync_sync_requests == ["RP"]


# -- TLS and the runnable module -------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_start(tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    standin = XnatStandin()
    url = standin.start(ssl_context=context)
    try:
        assert url.startswith("https://127.0.0.1:")
        r = requests.get(
            url + "/xapi/siteConfig/initialized", auth=ADMIN, verify=str(cert_path), timeout=5
        )
        assert r.status_code == 200
        assert r.json() is False
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/", timeout=5)  # not in the default trust store
        r = requests.get(url + "/", verify=str(cert_path), timeout=5)  # still serving
        assert STANDIN_NOTICE in r.text
    finally:
        standin.stop()


def test_runs_as_module() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.xnat_standin",
            "--port",
            "0",
            "--xsync",
            "--name",
            "central",
            "--profile",
            "1.9",
            "--xsync-build",
            "java21",
            "--dicomscp-put",
            "merge",
            "--no-smtp-post-500",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("central: http://127.0.0.1:")
        assert "profile 1.9" in line
        url = line.split()[1]
        r = requests.get(url + "/", timeout=5)
        assert "NOT XNAT" in r.text
        r = requests.post(url + "/xapi/siteConfig", json=SITE, auth=ADMIN, timeout=5)
        assert r.status_code == 200
        assert "java21 build" in requests.get(url + "/", timeout=5).text
        plugins = requests.get(url + "/xapi/plugins", auth=ADMIN, timeout=5).json()
        assert plugins["xsyncPlugin"]["version"] == "1.8.2-SNAPSHOT"
        r = requests.post(
            url + "/xapi/notifications",
            json={"smtpServer": json.dumps(SMTP_SERVER)},
            auth=ADMIN,
            timeout=5,
        )
        assert r.status_code == 200  # --no-smtp-post-500
    finally:
        proc.terminate()
        proc.wait(timeout=10)

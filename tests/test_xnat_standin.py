"""Tests of the XNAT REST stand-in itself (tests only, NOT XNAT), over real HTTP on 127.0.0.1.

Each documented quirk the stand-in reproduces (../shared/design/xnat-facts.md §6-§16) is asserted
here, so the contract tests of the reconcilers can rely on it.
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

from tests.xnat_standin import STANDIN_NOTICE, XnatStandin

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


# -- §6 initialisation and authentication --------------------------------------------------------


def test_before_init_json_endpoints_answer_html_setup_page(fresh: XnatStandin) -> None:
    r = requests.get(fresh.url + "/xapi/siteConfig/initialized", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() is False
    # xnat-facts.md §6: the trap — 200 with text/html on a JSON endpoint
    for path in ("/xapi/users", "/xapi/dicomscp", "/data/projects?format=json", "/xapi/nope"):
        r = requests.get(fresh.url + path, auth=ADMIN, timeout=5)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith("text/html"), path
    r = requests.get(fresh.url + "/xapi/siteConfig", auth=ADMIN, timeout=5)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["siteId"] == "XNAT"


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
    assert requests.get(f"{url}/xapi/siteConfig/initialized", timeout=5).json() is True
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
    r = requests.get(xnat.url + "/xapi/siteConfig", auth=("carol", "carolpw1"), timeout=5)
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


def test_users_roles_groups(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    body = {
        "username": "xnat_fleet",
        "password": "s3cret-pw",
        "firstName": "X",
        "lastName": "F",
        "email": "f@example.org",
        "enabled": True,
        "verified": True,
    }
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
    assert session.get(f"{url}/xapi/users/nobody").status_code == 404
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


# -- §15 SMTP --------------------------------------------------------------------------------------


def test_smtp_post_answers_500_but_applies(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    server = {
        "hostname": "smtp.example.org",
        "port": 587,
        "protocol": "smtp",
        "username": "mailer",
        "password": "mail-pw",
        "mailProperties": {"mail.smtp.auth": True, "mail.smtp.starttls.enable": True},
    }
    r = session.post(f"{url}/xapi/notifications", json={"smtpServer": json.dumps(server)})
    assert r.status_code == 500  # xnat-facts.md §15 quirk
    assert r.headers["Content-Type"].startswith("text/plain")
    assert session.get(f"{url}/xapi/notifications/smtp").json() == server  # ...yet applied
    r = session.post(f"{url}/xapi/notifications", json={"smtpServer": {"hostname": "other"}})
    assert r.status_code == 400  # must be a JSON *string*
    assert xnat.state.smtp["hostname"] == "smtp.example.org"


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
    assert session.get(f"{url}/data/projects/P1/accessibility").text == "private"
    assert session.put(f"{url}/data/projects/P1/accessibility/protected").status_code == 200
    assert session.get(f"{url}/data/projects/P1/accessibility").text == "protected"
    assert session.put(f"{url}/data/projects/P1/accessibility/open").status_code == 400
    # xnat-facts.md §9 quirk: any integer is accepted as a prearchive code
    assert session.put(f"{url}/data/projects/P1/prearchive_code/7").status_code == 200
    assert session.get(f"{url}/data/projects/P1/prearchive_code").text == "7"
    assert xnat.state.projects["P1"].prearchive_code == 7


def test_project_membership(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    create_project(url, "P1")
    create_user(url, "alice")
    assert session.put(f"{url}/data/projects/P1/users/Members/alice").status_code == 200
    assert session.put(f"{url}/data/projects/P1/users/Owners/ghost").status_code == 404
    rows = session.get(f"{url}/data/archive/projects/P1/users?format=json").json()["ResultSet"][
        "Result"
    ]
    assert {r["login"]: r["GROUP_ID"] for r in rows} == {"admin": "P1_owner", "alice": "P1_member"}
    session.put(f"{url}/data/projects/P1/users/Owners/alice")  # moves, not adds
    assert xnat.state.projects["P1"].members["alice"] == "owner"
    assert session.delete(f"{url}/data/projects/P1/users/Owners/alice").status_code == 200
    assert "alice" not in xnat.state.projects["P1"].members


def test_version_1_10_empty_site_url_creates_then_500() -> None:
    with XnatStandin(version="1.10.0") as standin:
        initialise(standin.url)
        standin.state.site_config["siteUrl"] = ""
        r = create_project(standin.url, "P9")
        assert r.status_code == 500
        assert "P9" in standin.state.projects  # xnat-facts.md §6: created anyway


# -- §10 DICOM SCP receivers -----------------------------------------------------------------------


def test_receivers_duplicate_port_accepted_same_ae_and_port_409(
    session: requests.Session, xnat: XnatStandin
) -> None:
    url = xnat.url
    default = session.get(f"{url}/xapi/dicomscp").json()
    assert [(r["aeTitle"], r["port"]) for r in default] == [("XNAT", 8104)]
    r = session.post(f"{url}/xapi/dicomscp", json={"aeTitle": "RELAY", "port": 8104})
    assert r.status_code == 200  # another AE on the same port: silently accepted (quirk)
    created = r.json()
    assert created["anonymizationEnabled"] is True
    assert created["identifier"] == "dicomObjectIdentifier"
    r = session.post(f"{url}/xapi/dicomscp", json={"aeTitle": "RELAY", "port": 8104})
    assert r.status_code == 409
    rid = created["id"]
    assert session.put(f"{url}/xapi/dicomscp/{rid}/enabled/false").status_code == 200
    assert session.get(f"{url}/xapi/dicomscp/{rid}/enabled").json() is False
    r = session.post(f"{url}/xapi/dicomscp", json={"aeTitle": "RELAY", "port": 8104})
    assert r.status_code == 200  # the 409 only covers ENABLED receivers
    r = session.put(f"{url}/xapi/dicomscp/{rid}", json={"port": 11112, "whitelistText": "x"})
    merged = r.json()
    assert (merged["aeTitle"], merged["port"], merged["enabled"]) == ("RELAY", 11112, False)
    assert "whitelistText" not in merged
    assert session.delete(f"{url}/xapi/dicomscp/{rid}").status_code == 200
    assert session.get(f"{url}/xapi/dicomscp/{rid}").status_code == 404


# -- §11 anonymization -----------------------------------------------------------------------------


def test_anonymization(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    default = session.get(f"{url}/xapi/anonymize/default")
    assert default.headers["Content-Type"].startswith("text/plain")
    assert 'version "6.1"' in default.text
    assert "(0008,1030)" in default.text
    assert session.get(f"{url}/xapi/anonymize/site").text == default.text
    assert session.get(f"{url}/xapi/anonymize/site/enabled").json() is True
    script = 'version "6.1"\n(0010,0010) := subject\n'
    assert session.put(f"{url}/xapi/anonymize/site", data=script, headers=TEXT).status_code == 200
    assert xnat.state.site_config["sitewideAnonymizationScript"] == script
    session.put(f"{url}/xapi/anonymize/site/enabled?enable=false")
    assert xnat.state.site_config["enableSitewideAnonymizationScript"] is False
    assert session.get(f"{url}/xapi/anonymize/site/enabled").json() is False
    create_project(url, "P1")
    assert session.get(f"{url}/xapi/anonymize/projects/P1").status_code == 204
    session.put(f"{url}/xapi/anonymize/projects/P1", data=script, headers=TEXT)
    assert session.get(f"{url}/xapi/anonymize/projects/P1").text == script
    assert session.get(f"{url}/xapi/anonymize/projects/P1/enabled").json() is False
    session.put(f"{url}/xapi/anonymize/projects/P1/enabled?enable=true")
    assert session.get(f"{url}/xapi/anonymize/projects/P1/enabled").json() is True


# -- §12 events ------------------------------------------------------------------------------------


def test_event_subscriptions(session: requests.Session, xnat: XnatStandin) -> None:
    url = xnat.url
    sub = {
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
    r = session.post(f"{url}/xapi/events/subscription", json=sub)
    assert r.status_code == 405
    assert r.text == "Event Service disabled."
    assert session.get(f"{url}/xapi/events/prefs").json() == {"enabled": False}
    session.put(f"{url}/xapi/events/prefs", json={"enabled": True})
    r = session.post(f"{url}/xapi/events/subscription", json=sub)
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("text/plain")
    name, _, first_id = r.text.rpartition(":")
    assert name == "dcm2niix"
    r2 = session.post(f"{url}/xapi/events/subscription", json=sub)  # duplicate accepted (quirk)
    assert r2.status_code == 201
    listed = session.get(f"{url}/xapi/events/subscriptions").json()
    assert [s["name"] for s in listed] == ["dcm2niix", "dcm2niix"]
    stored = session.get(f"{url}/xapi/events/subscription/{first_id}").json()
    assert stored["subscription-owner"] == "admin"
    assert stored["valid"] is True
    assert "created" in stored
    session.post(f"{url}/xapi/events/subscription/{first_id}/deactivate")
    assert xnat.state.subscriptions[int(first_id)]["active"] is False
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
    assert r.json()["host"] == "tcp://10.0.0.5:2376"
    assert session.get(f"{url}/xapi/docker/server").json()["path-translation-docker-prefix"] == "/d"
    assert session.get(f"{url}/xapi/docker/server/ping").text == "OK"
    command = {"name": "dcm2niix", "image": "x/dcm2niix:1", "xnat": [{"name": "scan-to-nifti"}]}
    r = session.post(f"{url}/xapi/commands", json=command)
    assert r.status_code in (200, 201)
    cid = int(r.text)  # bare numeric id (quirk)
    assert session.post(f"{url}/xapi/commands", json={"name": "bad"}).status_code == 400
    found = session.get(f"{url}/xapi/commands?name=dcm2niix").json()
    assert [c["id"] for c in found] == [cid]
    assert isinstance(found[0]["xnat"][0]["id"], int)
    assert session.get(f"{url}/xapi/commands?name=other").json() == []
    w = f"{url}/xapi/commands/{cid}/wrappers/scan-to-nifti"
    assert session.get(f"{w}/enabled").json() is False
    assert session.put(f"{w}/enabled").status_code == 200
    assert session.get(f"{w}/enabled").json() is True
    create_project(url, "P1")
    pw = f"{url}/xapi/projects/P1/commands/{cid}/wrappers/scan-to-nifti"
    assert session.get(f"{pw}/enabled").json() is False
    session.put(f"{pw}/enabled")
    assert session.get(f"{pw}/enabled").json() is True
    session.put(f"{pw}/disabled")
    assert session.get(f"{pw}/enabled").json() is False
    assert session.delete(f"{url}/xapi/commands/{cid}").status_code < 300
    assert session.delete(f"{url}/xapi/commands/424242").status_code < 300  # missing: "succeeds"
    assert session.get(f"{url}/xapi/commands").json() == []


def test_commands_need_container_manager(xnat: XnatStandin) -> None:
    url = xnat.url
    create_user(url, "runner", "runnerpw")
    assert (
        requests.get(f"{url}/xapi/commands", auth=("runner", "runnerpw"), timeout=5).status_code
        == 403
    )
    requests.put(f"{url}/xapi/users/runner/roles/ContainerManager", auth=ADMIN, timeout=5)
    assert (
        requests.get(f"{url}/xapi/commands", auth=("runner", "runnerpw"), timeout=5).status_code
        == 200
    )
    xnat.state.commands_require_container_manager = True
    assert requests.get(f"{url}/xapi/commands", auth=ADMIN, timeout=5).status_code == 403


# -- §14 plugins / §16 Xsync availability ----------------------------------------------------------


def test_plugins_and_xsync_only_when_enabled(session: requests.Session, xnat: XnatStandin) -> None:
    plugins = session.get(xnat.url + "/xapi/plugins").json()
    assert "xsync" not in plugins
    assert session.get(xnat.url + "/xapi/xsyncSitePreferences").status_code == 404
    with XnatStandin(xsync=True) as relay:
        initialise(relay.url)
        plugins = requests.get(relay.url + "/xapi/plugins", auth=ADMIN, timeout=5).json()
        assert plugins["xsync"]["id"] == "xsync"
        assert set(plugins["xsync"]) >= {"id", "name", "version"}


# -- §16 Xsync -------------------------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[XnatStandin]:
    with XnatStandin(xsync=True, name="relay") as standin:
        initialise(standin.url)
        assert create_project(standin.url, "RP").status_code == 200
        yield standin


@pytest.fixture
def central() -> Iterator[XnatStandin]:
    with XnatStandin(name="central") as standin:
        initialise(standin.url)
        assert create_project(standin.url, "CP").status_code == 200
        for user in ("own", "mem", "col", "out"):
            create_user(standin.url, user, f"{user}-password")
        for level, user in (("Owners", "own"), ("Members", "mem"), ("Collaborators", "col")):
            r = requests.put(
                f"{standin.url}/data/projects/CP/users/{level}/{user}", auth=ADMIN, timeout=5
            )
            assert r.status_code == 200
        yield standin


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


def test_xsync_site_preferences(relay: XnatStandin) -> None:
    url = relay.url + "/xapi/xsyncSitePreferences"
    prefs = requests.get(url, auth=ADMIN, timeout=5).json()
    assert prefs["tokenRefreshInterval"] == "10 hours"
    assert prefs["syncRetryCount"] == "2"
    for bad in ("4 minutes", "2 days", "ten hours", "10hours"):
        r = requests.post(url, json={"tokenRefreshInterval": bad}, auth=ADMIN, timeout=5)
        assert r.status_code == 400, bad
    r = requests.post(
        url,
        json={"syncRetryInterval": "30 minutes", "syncMaxUncompressedZipFileSize": 2048},
        auth=ADMIN,
        timeout=5,
    )
    assert r.status_code == 200
    assert relay.state.xsync_site_prefs["syncRetryInterval"] == "30 minutes"
    assert relay.state.xsync_site_prefs["syncMaxUncompressedZipFileSize"] == 2048


def test_xsync_setup_content_type_and_source_project(relay: XnatStandin) -> None:
    url = f"{relay.url}/xapi/xsync/setup/projects/RP"
    assert requests.get(url, auth=ADMIN, timeout=5).status_code == 404
    r = requests.post(url, json=xsync_config(), auth=ADMIN, timeout=5)
    assert r.status_code == 415  # Java 8 build consumes text/plain (xnat-facts.md §16.4)
    body = json.dumps(xsync_config(source="OTHER"))
    assert requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5).status_code == 400
    body = json.dumps(xsync_config())
    assert requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5).status_code == 200
    assert requests.get(url, auth=ADMIN, timeout=5).json()["remote_project_id"] == "CP"


def test_xsync_json_flavour_rejects_text_plain() -> None:
    with XnatStandin(xsync=True, xsync_content_type="application/json") as relay:
        initialise(relay.url)
        create_project(relay.url, "RP")
        url = f"{relay.url}/xapi/xsync/setup/projects/RP"
        body = json.dumps(xsync_config())
        assert requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5).status_code == 415
        assert requests.post(url, json=xsync_config(), auth=ADMIN, timeout=5).status_code == 200


def _issue(central: XnatStandin, user: str) -> dict[str, Any]:
    r = requests.get(
        f"{central.url}/data/services/tokens/issue", auth=(user, f"{user}-password"), timeout=5
    )
    assert r.status_code == 200
    token: dict[str, Any] = r.json()
    return token


def _save(
    relay: XnatStandin, central: XnatStandin, user: str, token: dict[str, Any]
) -> requests.Response:
    body = {
        "host": central.url,
        "localProject": "RP",
        "remoteProject": "CP",
        "syncNewOnly": True,
        "alias": token["alias"],
        "secret": token["secret"],
        "username": user,
        "estimatedExpirationTime": token["estimatedExpirationTime"],
    }
    return requests.post(
        f"{relay.url}/xapi/xsync/credentials/save/projects/RP",
        data=json.dumps(body),
        headers=TEXT,
        auth=ADMIN,
        timeout=10,
    )


def test_xsync_credential_save_levels(relay: XnatStandin, central: XnatStandin) -> None:
    assert _save(relay, central, "own", _issue(central, "own")).status_code == 200
    assert (relay.state.xsync_credentials[("RP", central.url)]["username"]) == "own"
    assert _save(relay, central, "mem", _issue(central, "mem")).status_code == 202
    assert _save(relay, central, "col", _issue(central, "col")).status_code == 403
    assert _save(relay, central, "out", _issue(central, "out")).status_code == 403  # no access
    # the relay really asked the central with the token (xnat-facts.md §16.4)
    assert ("GET", "/data/archive/projects/CP/users", 200) in central.requests_log
    assert relay.state.xsync_credentials[("RP", central.url)]["username"] == "mem"
    token = _issue(central, "own")
    token["secret"] = "wrong"
    assert _save(relay, central, "own", token).status_code == 403
    r = requests.post(
        f"{relay.url}/xapi/xsync/credentials/save/projects/RP",
        data=json.dumps({"host": central.url}),
        headers=TEXT,
        auth=ADMIN,
        timeout=5,
    )
    assert r.status_code == 400
    r = requests.post(
        f"{relay.url}/xapi/xsync/credentials/save/projects/RP",
        json={"host": central.url},
        auth=ADMIN,
        timeout=5,
    )
    assert r.status_code == 415


def test_xsync_credential_check(relay: XnatStandin, central: XnatStandin) -> None:
    url = f"{relay.url}/xapi/xsync/credentials/check/projects/RP"
    body = json.dumps({"host": central.url, "localProject": "RP"})
    r = requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5)
    assert r.status_code == 403
    assert r.text == "Check project configuration"
    token = _issue(central, "own")
    assert _save(relay, central, "own", token).status_code == 200
    r = requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5)
    assert r.status_code == 200
    assert r.text in central.state.sessions
    assert central.state.sessions[r.text] == "own"
    central.state.expire_all_tokens()  # e.g. relay shipped and stored too long (§16.6)
    r = requests.post(url, data=body, headers=TEXT, auth=ADMIN, timeout=5)
    assert r.status_code == 400
    assert "Could not connect" in r.text


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


def test_xsync_operations(relay: XnatStandin) -> None:
    url = relay.url + "/xapi/xsync"
    assert requests.post(f"{url}/unblock/RP", auth=ADMIN, timeout=5).status_code == 404
    assert requests.post(f"{url}/projects/RP", auth=ADMIN, timeout=5).status_code == 404
    requests.post(
        f"{url}/setup/projects/RP",
        data=json.dumps(xsync_config()),
        headers=TEXT,
        auth=ADMIN,
        timeout=5,
    )
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
    assert requests.get(f"{url}/syncStatus/projects/RP", auth=ADMIN, timeout=5).json() == {
        "status": None,
        "lastSync": None,
    }
    relay.state.xsync_status["RP"] = {"status": "SYNCED_AND_VERIFIED", "lastSync": 1700000000000}
    status = requests.get(f"{url}/syncStatus/projects/RP", auth=ADMIN, timeout=5).json()
    assert status["status"] == "SYNCED_AND_VERIFIED"
    relay.state.xsync_history.append(
        {"project": "RP", "local_label": "S1", "sync_status": "FAILED"}
    )
    assert requests.get(f"{url}/history", auth=ADMIN, timeout=5).json()[0]["local_label"] == "S1"


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
        r = requests.get(url + "/xapi/siteConfig/initialized", verify=str(cert_path), timeout=5)
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
        [sys.executable, "-m", "tests.xnat_standin", "--port", "0", "--xsync", "--name", "central"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("central: http://127.0.0.1:")
        url = line.split()[1]
        r = requests.get(url + "/", timeout=5)
        assert "NOT XNAT" in r.text
        r = requests.post(url + "/xapi/siteConfig", json=SITE, auth=ADMIN, timeout=5)
        assert r.status_code == 200
        assert "xsync" in requests.get(url + "/xapi/plugins", auth=ADMIN, timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

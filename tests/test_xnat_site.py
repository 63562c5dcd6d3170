"""Site configuration and SMTP reconcilers against the stand-in (docs/xnat-api.md §7, §15)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import requests

from tests.xnat_helpers import AUTH, SERVICE_USER, context, desired, refused, run, shown, writes
from tests.xnat_standin import XnatStandin
from xnat_fleet.xnat.client import XnatHTTPError
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import site, smtp

SMTP_PASSWORD = "smtp-pw-d41e-never-shown"

SITE_KEYS: dict[str, Any] = {
    "siteId": "RELAY_A",
    "siteUrl": "https://relay-a.example.org",
    "adminEmail": "study-admins@example.org",
    "archivePath": "/data/xnat/archive",
    "enabledProviders": ["localdb", "ldap1"],
    "requireLogin": True,
    "userRegistration": False,
    "par": False,
    "uiAllowNonAdminProjectCreation": False,
    "restrictUserListAccessToAdmins": True,
    "sessionTimeout": "30 minutes",
    "aliasTokenTimeout": "7 days",
    "sessionXmlRebuilderInterval": 10,
    "maxFailedLogins": 5,
    "receivedFileUser": SERVICE_USER,
    "primaryAdminUsername": SERVICE_USER,
}
CHANGED_FROM_INITIALISED = {
    "siteId",
    "siteUrl",
    "adminEmail",
    "enabledProviders",
    "par",
    "uiAllowNonAdminProjectCreation",
    "restrictUserListAccessToAdmins",
    "sessionTimeout",
    "aliasTokenTimeout",
    "sessionXmlRebuilderInterval",
    "maxFailedLogins",
    "primaryAdminUsername",
    "receivedFileUser",
}


def site_desired(url: str, **keys: Any) -> DesiredXnat:
    return desired(url, site_config={**SITE_KEYS, **keys})


# -- site ------------------------------------------------------------------------------------
def test_site_plan_lists_only_differing_keys(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url))
    changes = site.plan(ctx)
    assert len(changes) == 1
    change = changes[0]
    assert (change.area, change.action, change.target) == ("site", "update", "siteConfig")
    assert set(change.after) == CHANGED_FROM_INITIALISED
    assert change.before["siteId"] == "TEST"
    assert change.before["maxFailedLogins"] == 20
    assert change.after["enabledProviders"] == ["localdb", "ldap1"]
    assert "requireLogin" not in change.after  # equal already


def test_site_apply_sends_exactly_the_difference_and_converges(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url))
    run(site.plan(ctx))
    assert [(m, p) for m, p, _ in writes(sa.requests_log)] == [("POST", "/xapi/siteConfig")]
    config = sa.state.site_config
    assert config["siteId"] == "RELAY_A"
    assert config["maxFailedLogins"] == 5  # native types, not "5"
    assert config["par"] is False
    assert config["enabledProviders"] == ["localdb", "ldap1"]
    assert site.plan(ctx) == []
    sa.requests_log.clear()
    run(site.plan(ctx))  # second apply: nothing to do, nothing sent
    assert writes(sa.requests_log) == []


def test_site_posts_only_changed_keys(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url))
    run(site.plan(ctx))
    seen: list[Any] = []
    original = ctx.client.request

    def spy(method: str, path: str, **kwargs: Any) -> requests.Response:
        if method == "POST":
            seen.append(kwargs.get("json"))
        return original(method, path, **kwargs)

    ctx.client.request = spy  # type: ignore[method-assign]
    sa.state.site_config["sessionTimeout"] = "1 hour"
    run(site.plan(ctx))
    assert seen == [{"sessionTimeout": "30 minutes"}]


def test_site_drift_made_over_rest_is_seen(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url))
    run(site.plan(ctx))
    r = requests.post(
        sa.url + "/xapi/siteConfig",
        json={"requireLogin": False, "maxFailedLogins": 50},
        auth=AUTH,
        timeout=5,
    )
    assert r.ok
    changes = site.plan(ctx)
    assert len(changes) == 1
    assert changes[0].before == {"requireLogin": False, "maxFailedLogins": 50}
    assert changes[0].after == {"requireLogin": True, "maxFailedLogins": 5}
    run(changes)
    assert site.plan(ctx) == []


@pytest.mark.parametrize(
    ("echo", "equal"),
    [
        ({"enabledProviders": "localdb,ldap1"}, True),
        ({"enabledProviders": "[localdb, ldap1]"}, True),
        ({"enabledProviders": "['localdb','ldap1']"}, True),
        ({"enabledProviders": "localdb"}, False),
        ({"requireLogin": "true"}, True),
        ({"requireLogin": "false"}, False),
        ({"maxFailedLogins": "5"}, True),
        ({"maxFailedLogins": "6"}, False),
        ({"sessionXmlRebuilderInterval": 10.0}, True),
    ],
)
def test_site_compares_native_types(sa: XnatStandin, echo: dict[str, Any], equal: bool) -> None:
    ctx = context(site_desired(sa.url))
    run(site.plan(ctx))
    sa.state.site_config.update(echo)
    changes = site.plan(ctx)
    assert (changes == []) is equal
    if not equal:
        assert set(changes[0].after) == set(echo)


def test_site_bool_is_not_an_int(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url))
    run(site.plan(ctx))
    sa.state.site_config["requireLogin"] = 1  # not a JSON boolean
    assert [set(c.after) for c in site.plan(ctx)] == [{"requireLogin"}]


def test_site_fresh_plans_against_defaults_without_requests(sa: XnatStandin) -> None:
    ctx = context(site_desired(sa.url), fresh=True)
    changes = site.plan(ctx)
    assert sa.requests_log == []
    after = changes[0].after
    # Bootstrap sets the init keys, paths and receivedFileUser/primaryAdminUsername on a fresh
    # site (§6): the site plan does not list them again.
    for key in ("siteId", "siteUrl", "adminEmail", "receivedFileUser", "archivePath"):
        assert key not in after, key
    assert "requireLogin" not in after  # default true
    assert after["enabledProviders"] == ["localdb", "ldap1"]  # not a bootstrap key: planned


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"siteUrl": ""}, "siteUrl"),
        ({"siteUrl": "relay-a.example.org"}, "http(s) URL"),
        ({"siteId": "relay-a"}, "siteId"),
        ({"processingUrl": None}, "processingUrl"),
        ({"enabledProviders": []}, "enabledProviders"),
        ({"initialized": True}, "bootstrap"),
    ],
)
def test_site_invalid_desired_refused_before_any_request(
    sa: XnatStandin, keys: dict[str, Any], message: str
) -> None:
    caught = refused(sa, lambda: site.plan(context(site_desired(sa.url, **keys))))
    assert message in str(caught)
    assert (caught.host, caught.area) == ("test-host", "site")
    assert sa.requests_log == []


# -- smtp ------------------------------------------------------------------------------------
SMTP = {
    "hostname": "smtp.example.org",
    "port": 587,
    "protocol": "smtp",
    "username": "xnat-relay",
    "password": SMTP_PASSWORD,
    "starttls": True,
}


def smtp_desired(url: str, **fields: Any) -> DesiredXnat:
    return desired(url, smtp={**SMTP, **fields})


def test_smtp_plan_never_shows_the_password(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url))
    changes = smtp.plan(ctx)
    assert len(changes) == 1
    change = changes[0]
    assert change.target == "SMTP server"
    assert change.after["hostname"] == "smtp.example.org"
    assert change.after["port"] == 587
    assert change.after["mail.smtp.auth"] == "true"
    assert change.after["mail.smtp.starttls.enable"] == "true"
    assert SMTP_PASSWORD not in shown(changes)


def test_smtp_apply_accepts_the_500_and_judges_by_read_back(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url))
    run(smtp.plan(ctx))
    # docs/xnat-api.md §15: the stand-in applies the JSON call and answers 500.
    assert ("POST", "/xapi/notifications", 500) in sa.requests_log
    stored = sa.state.smtp
    assert stored["hostname"] == "smtp.example.org"
    assert stored["port"] == 587
    assert stored["password"] == SMTP_PASSWORD
    assert stored["mailProperties"] == {
        "mail.smtp.auth": "true",
        "mail.smtp.starttls.enable": "true",
    }
    assert smtp.plan(ctx) == []
    sa.requests_log.clear()
    run(smtp.plan(ctx))
    assert writes(sa.requests_log) == []


def test_smtp_posts_smtp_server_as_a_json_string(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url))
    seen: list[Any] = []
    original = ctx.client.request

    def spy(method: str, path: str, **kwargs: Any) -> requests.Response:
        if method == "POST":
            seen.append((path, kwargs.get("json")))
        return original(method, path, **kwargs)

    ctx.client.request = spy  # type: ignore[method-assign]
    run(smtp.plan(ctx))
    [(path, body)] = seen
    assert path == "/xapi/notifications"
    assert isinstance(body["smtpServer"], str)
    assert json.loads(body["smtpServer"])["hostname"] == "smtp.example.org"


def test_smtp_drift_including_the_password_is_seen(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url))
    run(smtp.plan(ctx))
    sa.state.smtp["port"] = 25
    sa.state.smtp["password"] = "changed-by-hand"
    changes = smtp.plan(ctx)
    assert len(changes) == 1
    assert changes[0].before == {"port": 25, "password": "(secret)"}
    assert changes[0].after == {"port": 587, "password": "(secret)"}
    assert "changed-by-hand" not in shown(changes)
    run(changes)
    assert smtp.plan(ctx) == []


def test_smtp_read_back_that_differs_is_an_error(sa: XnatStandin) -> None:
    """Simulate XNAT dropping the write: the read-back is reset between POST and GET."""
    ctx = context(smtp_desired(sa.url))
    changes = smtp.plan(ctx)
    original = ctx.client.get_json

    def read_back(path: str, **kwargs: Any) -> Any:
        sa.state.smtp = {"hostname": "localhost", "port": 25, "password": "old-pw-7c"}
        return original(path, **kwargs)

    ctx.client.get_json = read_back  # type: ignore[method-assign]
    with pytest.raises(XnatHTTPError) as caught:
        run(changes)
    message = str(caught.value)
    assert caught.value.status == 500
    assert "POST /xapi/notifications" in message
    assert "hostname" in message and "password" in message
    assert SMTP_PASSWORD not in message and "old-pw-7c" not in message


def test_smtp_accepts_xnat_property_names_on_read_back(sa: XnatStandin) -> None:
    """The normaliser (a pure parser) reads the Java mail sender naming too (`host`, flattened
    `mail.*` properties, numbers and flags as strings) as the same server."""
    ctx = context(smtp_desired(sa.url))
    want = smtp.desired_server(ctx)
    raw = {
        "host": "smtp.example.org",
        "port": "587",
        "protocol": "smtp",
        "username": "xnat-relay",
        # docs/xnat-api.md §15: the stored password comes back in plain text (blank: left out)
        "password": want["password"],
        "mail.smtp.auth": "true",
        "mail.smtp.starttls.enable": True,
    }
    assert smtp.differences(want, smtp.normalise(raw)) == []
    assert smtp.differences(want, smtp.normalise({**raw, "port": "25"})) == ["port"]
    run(smtp.plan(ctx))  # and through the stand-in's own read-back
    assert smtp.plan(ctx) == []


def test_smtp_fresh_plans_without_requests(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url), fresh=True)
    changes = smtp.plan(ctx)
    assert sa.requests_log == []
    assert changes[0].before["hostname"] is None
    assert "password" not in changes[0].after  # nothing known to compare it with


def test_smtp_default_null_client_converges(sa: XnatStandin) -> None:
    ctx = context(desired(sa.url))  # localhost:25, no credentials (the postfix null client)
    run(smtp.plan(ctx))
    assert sa.state.smtp["mailProperties"]["mail.smtp.auth"] == "false"
    assert smtp.plan(ctx) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hostname": ""}, "hostname"),
        ({"port": 0}, "port"),
        ({"port": "smtp"}, "port"),
        ({"protocol": "pop3"}, "protocol"),
        ({"password": ""}, "set both or neither"),
        ({"username": "", "password": "", "auth": True}, "mail.smtp.auth"),
    ],
)
def test_smtp_invalid_desired_refused_before_any_request(
    sa: XnatStandin, fields: dict[str, Any], message: str
) -> None:
    caught = refused(sa, lambda: smtp.plan(context(smtp_desired(sa.url, **fields))))
    assert message in str(caught)
    assert caught.area == "smtp"
    assert sa.requests_log == []


def test_desired_dataclass_is_untouched(sa: XnatStandin) -> None:
    d = smtp_desired(sa.url)
    copy = dataclasses.replace(d)
    run(smtp.plan(context(d)))
    assert d.smtp == copy.smtp


def test_smtp_masked_password_on_read_back_is_not_drift(sa: XnatStandin) -> None:
    ctx = context(smtp_desired(sa.url))
    run(smtp.plan(ctx))
    sa.state.smtp["password"] = "********"
    assert smtp.plan(ctx) == []
    sa.state.smtp["username"] = "someone-else"
    assert [set(c.after) for c in smtp.plan(ctx)] == [{"username"}]

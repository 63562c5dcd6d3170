#!/usr/bin/env python3
"""SMTP sink for the smtp molecule scenario (runs in the peer container).

Listens on SINK_PORT (587) with STARTTLS required, accepts AUTH PLAIN/LOGIN only for exactly
SINK_USER / SINK_PASSWORD and only after STARTTLS, and writes every accepted message with its
envelope to SINK_SPOOL/<n>.json: mail_from, rcpt_tos, auth_login, tls, tls_version, peer, data.
"""
import asyncio
import itertools
import json
import logging
import os
import ssl
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = os.environ.get("SINK_HOST", "0.0.0.0")
PORT = int(os.environ.get("SINK_PORT", "587"))
USER = os.environ["SINK_USER"].encode()
PASSWORD = os.environ["SINK_PASSWORD"].encode()
SPOOL = os.environ.get("SINK_SPOOL", "/var/spool/sink")
CERT = os.environ.get("SINK_CERT", "/run/sink/cert.pem")
KEY = os.environ.get("SINK_KEY", "/run/sink/key.pem")

log = logging.getLogger("sink")
counter = itertools.count(1)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        mechanism in ("PLAIN", "LOGIN")
        and isinstance(auth_data, LoginPassword)
        and auth_data.login == USER
        and auth_data.password == PASSWORD
    )
    log.info("AUTH %s from %s: %s", mechanism, session.peer, "accepted" if ok else "rejected")
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        login = getattr(session.auth_data, "login", None)
        tls_version = None
        if session.ssl is not None and server.transport is not None:
            ssl_object = server.transport.get_extra_info("ssl_object")
            tls_version = ssl_object.version() if ssl_object is not None else None
        record = {
            "received": time.time(),
            "peer": list(session.peer) if session.peer else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(session.authenticated),
            "auth_login": login.decode() if isinstance(login, bytes) else login,
            "tls": session.ssl is not None,
            "tls_version": tls_version,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        path = os.path.join(SPOOL, "%06d.json" % next(counter))
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        os.rename(path + ".tmp", path)  # readers never see a half-written file
        log.info("stored %s from %s to %s", path, envelope.mail_from, envelope.rcpt_tos)
        return "250 2.0.0 OK stored"


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.makedirs(SPOOL, exist_ok=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)

    def factory():
        return SMTP(
            Handler(),
            hostname="sink.xf-smtp.test",
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(factory, HOST, PORT))
    log.info("listening on %s:%d", HOST, PORT)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()

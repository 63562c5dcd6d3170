"""Run one XNAT REST stand-in in the foreground (tests/demo only — NOT XNAT).

    python -m tests.xnat_standin --port 8080 [--profile 1.10] [--version 1.9.3.6] [--xsync]
        [--xsync-build java8|java21] [--dicomscp-put merge|replace]
        [--site-anon-put-reenables | --no-site-anon-put-reenables]
        [--smtp-post-500 | --no-smtp-post-500] [--name central]

``--profile`` picks one of STANDIN_PROFILES (tests/xnat_standin/state.py); the other setting
flags override single settings. Run from the repository root. Prints the base URL, serves until
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import threading

from .server import STANDIN_NOTICE, XnatStandin
from .state import STANDIN_PROFILES, XSYNC_BUILDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.xnat_standin", description=STANDIN_NOTICE
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument(
        "--profile",
        choices=sorted(STANDIN_PROFILES),
        help="version-dependent behaviour, one per XNAT line (default: from --version)",
    )
    parser.add_argument("--version", help="XNAT version to emulate (default 1.9.3.6)")
    parser.add_argument("--xsync", action="store_true", help="serve the Xsync plugin endpoints")
    parser.add_argument(
        "--xsync-build",
        choices=XSYNC_BUILDS,
        help="Xsync plugin build: java8 (XNAT <= 1.9, text/plain) or java21 (1.10, JSON)",
    )
    parser.add_argument(
        "--dicomscp-put",
        choices=("merge", "replace"),
        help="PUT /xapi/dicomscp/{id}: merge (xnat-web bff1f28) or replace with the body",
    )
    parser.add_argument(
        "--site-anon-put-reenables",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PUT /xapi/anonymize/site turns the site script back on (newer xnat-web)",
    )
    parser.add_argument(
        "--smtp-post-500",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="POST /xapi/notifications {smtpServer} stores part of it, then answers 500",
    )
    parser.add_argument("--name", default="xnat", help="label shown on the / page")
    args = parser.parse_args(argv)
    standin = XnatStandin(
        profile=args.profile,
        version=args.version,
        xsync=args.xsync,
        xsync_build=args.xsync_build,
        dicomscp_put_merge=None if args.dicomscp_put is None else args.dicomscp_put == "merge",
        site_anon_put_reenables=args.site_anon_put_reenables,
        smtp_post_500=args.smtp_post_500,
        name=args.name,
    )
    url = standin.start(host=args.host, port=args.port)
    print(f"{args.name}: {url}  ({STANDIN_NOTICE}; profile {standin.state.profile})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

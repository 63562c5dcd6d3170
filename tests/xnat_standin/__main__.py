"""Run one XNAT REST stand-in in the foreground (tests/demo only — NOT XNAT).

    python -m tests.xnat_standin --port 8080 [--version 1.9.3.6] [--xsync] [--name central]

Run from the repository root. Prints the base URL, serves until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import threading

from .server import STANDIN_NOTICE, XnatStandin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.xnat_standin", description=STANDIN_NOTICE
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--version", default="1.9.3.6", help="XNAT version to emulate")
    parser.add_argument("--xsync", action="store_true", help="serve the Xsync plugin endpoints")
    parser.add_argument(
        "--xsync-content-type",
        default="text/plain",
        help="content type Xsync setup/credentials consume (text/plain or application/json)",
    )
    parser.add_argument("--name", default="xnat", help="label shown on the / page")
    args = parser.parse_args(argv)
    standin = XnatStandin(
        version=args.version,
        xsync=args.xsync,
        xsync_content_type=args.xsync_content_type,
        name=args.name,
    )
    url = standin.start(host=args.host, port=args.port)
    print(f"{args.name}: {url}  ({STANDIN_NOTICE})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

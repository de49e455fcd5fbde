"""`python -m devstack` (what `make dev` runs): the whole product on loopback until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

from behest_lambda.providers import DEFAULT_PROVIDER  # noqa: E402
from devstack.identity import SHAPES  # noqa: E402
from devstack.stack import DevStack, Ports  # noqa: E402


def taken(ports: Ports) -> list[str]:
    """The ports asked for that another process holds, each named with the flag that moves it."""
    held = []
    for name, port in dataclasses.asdict(ports).items():
        with socket.socket() as probe:
            # As the servers bind (SO_REUSEADDR): a port left in TIME_WAIT is free to them, a listening one is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                held.append(f"port {port} (--{name}-port) is taken")
    return held


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--api-port", type=int, default=Ports.api)
    parser.add_argument("--stream-port", type=int, default=Ports.stream)
    parser.add_argument("--identity-port", type=int, default=Ports.identity)
    parser.add_argument("--behest-port", type=int, default=Ports.behest)
    parser.add_argument("--secrets-port", type=int, default=Ports.secrets)
    parser.add_argument("--service-port", type=int, default=Ports.service, help="the server-to-server (IAM) URL")
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="seconds between streamed chunks")
    parser.add_argument("--mode", choices=("sign", "api-key"), default="sign", help="tenant key kind in the secret")
    parser.add_argument("--allow-origin", action="append", default=[], help="another browser origin for CORS")
    parser.add_argument("--idp", choices=sorted(SHAPES), default=DEFAULT_PROVIDER,
                        help="the identity provider to imitate (issuer path, discovery, keys, algorithm, claims, "
                             "cookie); the functions run with that preset")
    parser.add_argument("--legacy-hs256", action="store_true",
                        help="with --idp supabase: sign with a legacy JWT secret (HS256), kept in the key secret")
    args = parser.parse_args(argv)
    if args.legacy_hs256 and args.idp != "supabase":
        parser.error("--legacy-hs256 is Supabase's legacy JWT secret: use it with --idp supabase")

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    ports = Ports(args.api_port, args.stream_port, args.identity_port, args.behest_port, args.secrets_port,
                  args.service_port)
    try:
        stack = DevStack(ports, chunk_delay=args.chunk_delay, mode=args.mode,
                         allowed_origins=tuple(args.allow_origin), idp=args.idp,
                         legacy_secret=args.legacy_hs256).start()
    except OSError as e:
        held = taken(ports)
        reason = "; ".join(held) + ": stop what holds it, or move it with that flag" if held else \
            f"{e} (is a port taken? see --help for the port flags)"
        print(f"could not start the local stack: {reason}", file=sys.stderr)
        return 1
    try:
        print(stack.banner(), flush=True)
        done.wait()
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

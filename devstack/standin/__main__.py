"""`python -m devstack.standin`: the stand-in gateway alone, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from .faults import CHAT_PATH, EMBEDDINGS_PATH, MINT_PATH, MODELS_PATH, RESPONSES_PATH
from .server import DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_PORT, FAULTS_PATH, StandinGateway
from .tokens import API_KEY_PREFIX


def _parse_key_option(value: str) -> tuple[str, Path]:
    kid, sep, path = value.partition("=")
    if not sep or not kid or not path:
        raise argparse.ArgumentTypeError("expected KID=path/to/public.pem")
    return kid, Path(path)


def _parse_api_key_option(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts) or not parts[0].startswith(API_KEY_PREFIX):
        raise argparse.ArgumentTypeError(f"expected {API_KEY_PREFIX}...:TENANT:PROJECT")
    return parts[0], parts[1], parts[2]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the stand-in until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devstack.standin", description="A stand-in for Behest's gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--register-key", type=_parse_key_option, action="append", default=[], metavar="KID=PEM_PATH",
                        help="accept tokens signed under KID, verified with this public key (repeatable)")
    parser.add_argument("--api-key", type=_parse_api_key_option, action="append", default=[],
                        metavar="KEY:TENANT:PROJECT", help="an API key that may mint (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a browser origin the project allows (CORS, repeatable)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    gateway = StandinGateway(args.host, args.port, issuer=args.issuer, audience=args.audience,
                             allowed_origins=args.allow_origin,
                             chunk_delay=args.chunk_delay)
    try:
        for kid, path in args.register_key:
            gateway.register_key(kid, path.read_bytes())
        for api_key, tenant_id, project_id in args.api_key:
            gateway.register_api_key(api_key, tenant_id, project_id)
    except (OSError, ValueError, TypeError) as e:
        gateway.stop()
        parser.error(str(e))

    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    gateway.start()
    print(f"Behest stand-in listening on {gateway.url}", flush=True)
    print(f"  chat {gateway.url}{CHAT_PATH}  responses {gateway.url}{RESPONSES_PATH}", flush=True)
    print(f"  embeddings {gateway.url}{EMBEDDINGS_PATH}  models {gateway.url}{MODELS_PATH}", flush=True)
    print(f"  mint {gateway.url}{MINT_PATH}  faults {gateway.url}{FAULTS_PATH}", flush=True)
    print(f"  issuer {gateway.issuer}  audience {gateway.audience}  own signing kid {gateway.signing_kid}", flush=True)
    for kid, path in args.register_key:
        print(f"  accepting kid {kid} ({path})", flush=True)
    for api_key, tenant_id, project_id in args.api_key:
        print(f"  API key {api_key[:len(API_KEY_PREFIX) + 4]}... mints for {tenant_id}/{project_id}", flush=True)
    try:
        while not stop_requested.wait(1.0):
            pass
    finally:
        gateway.stop()
    print("Behest stand-in stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

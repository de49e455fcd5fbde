"""SnapStart readiness: importing the handlers creates nothing unique and fetches nothing, so a snapshot
taken after INIT freezes no ids, no entropy and no secret; every id is drawn when a request is served.

Each check runs in a fresh interpreter. A fork after INIT stands in for a snapshot restored into several
execution environments: the children share the parent's memory exactly as restored environments share
the snapshot's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.figures import Figures
from tests.support import ROOT, sign_env

TOPIC = "SnapStart readiness (fresh interpreters)"

IMPORT_UNDER_GUARD = r"""
import json, os, re, socket, sys, uuid

network = []
def refuse(*args, **kwargs):
    network.append(repr(args[1:2] or args[:1])[:80])
    raise OSError("no network during import")
for name in ("connect", "connect_ex", "sendto"):
    setattr(socket.socket, name, refuse)
socket.create_connection = refuse
socket.getaddrinfo = refuse

entropy = []
real_urandom, real_uuid4 = os.urandom, uuid.uuid4
os.urandom = lambda n: (entropy.append(f"os.urandom({n})"), real_urandom(n))[1]
uuid.uuid4 = lambda: (entropy.append("uuid4()"), real_uuid4())[1]

from behest_lambda import relay_handler, token_handler  # what Lambda's INIT does

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
findings, seen = [], set()

def inspect(value, where, depth=0):
    if id(value) in seen or depth > 10:
        return
    seen.add(id(value))
    kind = type(value).__name__
    if "PrivateKey" in kind or kind in ("SigningKey", "ApiKey", "MintResult"):
        findings.append(f"{where}: a {kind}")
    if isinstance(value, str):
        # Constants naming the formats ("behest_sk_live_", "BEGIN PRIVATE KEY") are fine; values of them are not.
        pem = "-----BEGIN" in value and len(value) > 200
        api_key = value.startswith("behest_sk_live_") and len(value) > len("behest_sk_live_")
        if pem or api_key or UUID.search(value) or value.startswith("eyJ"):
            findings.append(f"{where}: {value[:12]!r}…")
    elif isinstance(value, bytes) and len(value) >= 16:
        findings.append(f"{where}: {len(value)} bytes")
    elif isinstance(value, dict):
        for key, item in value.items():
            inspect(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            inspect(item, f"{where}[{index}]", depth + 1)
    elif callable(value) and getattr(value, "__closure__", None):
        for name, cell in zip(value.__code__.co_freevars, value.__closure__):
            try:
                inspect(cell.cell_contents, f"{where}.<{name}>", depth + 1)
            except ValueError:
                pass
    elif hasattr(value, "__dict__") and getattr(type(value), "__module__", "").startswith("behest_lambda"):
        inspect(vars(value), f"{where}.__dict__", depth + 1)

modules = sorted(name for name in sys.modules if name.startswith("behest_lambda"))
for name in modules:
    for attr, value in vars(sys.modules[name]).items():
        if not attr.startswith("__"):
            inspect(value, f"{name}.{attr}")

def service_of(handler):
    return dict(zip(handler.__code__.co_freevars, (c.cell_contents for c in handler.__closure__)))["service"]

print(json.dumps({
    "network": network, "entropy": entropy, "findings": findings, "modules": modules,
    "heavy": sorted(m for m in ("boto3", "botocore", "botocore.session", "botocore.client", "cryptography", "jwt",
                                "random") if m in sys.modules),
    "services_built": [service_of(h) is not None for h in (token_handler.handler, relay_handler.handler)],
}))
"""

MINT_ONCE = r"""
import json
from behest_lambda import token_handler
from tests.support import load_event

answer = json.loads(token_handler.handler(load_event("token_mint"), None)["body"])
import jwt
claims = jwt.decode(answer["token"], options={"verify_signature": False})
print(json.dumps({"jti": claims["jti"], "sid": claims["sid"]}))
"""

# INIT, one priming invocation (key parsed and cached, as a snapshot taken after priming would hold it),
# then three "restored environments" minting twice each.
FORK_AFTER_INIT = r"""
import json, os
from behest_lambda import token_handler
from tests.support import load_event

def mint():
    body = json.loads(token_handler.handler(load_event("token_mint"), None)["body"])
    import base64
    payload = body["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims["jti"], claims["sid"]

results = [("parent",) + mint()]
pipes = []
for child in range(3):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps([(f"child-{child}",) + mint() for _ in range(2)]).encode())
        os._exit(0)
    os.close(write)
    pipes.append((pid, read))
for pid, read in pipes:
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.waitpid(pid, 0)
    results += json.loads(data)
print(json.dumps(results))
"""


def run(script: str, env: dict[str, str]) -> Any:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("BEHEST_", "AWS_"))}
    environment.update(env, PYTHONPATH=os.pathsep.join([str(ROOT / "functions"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_handlers_touches_no_network_draws_no_entropy_and_holds_no_secret_or_id(
    unused_port: int, figures: Figures,
) -> None:
    # Configured as deployed (the secret) and as in development (a key in the environment): neither is read at import.
    for env in ({"BEHEST_KEY_SECRET_ID": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf",
                 "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{unused_port}", "AWS_DEFAULT_REGION": "us-east-1",
                 "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(unused_port)}, sign_env()):
        report = run(IMPORT_UNDER_GUARD, env)

        assert report["network"] == []
        assert report["entropy"] == []
        assert report["findings"] == []
        assert report["services_built"] == [False, False]  # settings, key source and minter are built on first use
        # Powertools imports botocore's bare package (0.3 ms) to hook its user agent; no session or client module.
        assert not {"boto3", "botocore.session", "botocore.client"} & set(report["heavy"])
    figures(TOPIC, f"import of token_handler + relay_handler ({len(report['modules'])} modules): 0 connection attempts, "
                   "0 os.urandom/uuid4 calls, 0 keys/credentials/ids/tokens in module state, services not built; "
                   "boto3 and botocore's sessions and clients not imported; loaded of note: "
                   f"{', '.join(report['heavy']) or 'none'}")


def test_two_processes_that_import_then_mint_draw_different_jti_and_sid(figures: Figures) -> None:
    first, second = run(MINT_ONCE, sign_env()), run(MINT_ONCE, sign_env())

    assert first["jti"] != second["jti"]
    assert first["sid"] != second["sid"]


def test_environments_restored_from_one_primed_snapshot_mint_unique_ids(figures: Figures) -> None:
    results = run(FORK_AFTER_INIT, sign_env())

    jtis = [jti for _, jti, _ in results]
    sids = [sid for _, _, sid in results]
    assert len(results) == 7
    assert len(set(jtis)) == 7 and len(set(sids)) == 7
    figures(TOPIC, "a primed INIT forked into 3 environments (the snapshot model): 7 mints, 7 distinct jti, "
                   "7 distinct sid; two separate processes: distinct jti and sid")


def test_the_guard_sees_a_primed_init_so_it_can_fail() -> None:
    primed = IMPORT_UNDER_GUARD.replace(
        "from behest_lambda import relay_handler, token_handler  # what Lambda's INIT does",
        "from behest_lambda import relay_handler, token_handler\n"
        "from tests.support import load_event\n"
        "token_handler.handler(load_event('token_mint'), None)  # priming: a mint during INIT",
    )

    report = run(primed, sign_env())

    assert "uuid4()" in report["entropy"]
    assert report["services_built"] == [True, False]
    assert any("SigningKey" in finding for finding in report["findings"])


def test_no_function_module_uses_the_random_module_whose_state_a_snapshot_would_freeze() -> None:
    # `random` is loaded at import (urllib.request → tempfile); ids come from uuid4, i.e. os.urandom, at request time.
    sources = {path.name: path.read_text() for path in (ROOT / "functions" / "behest_lambda").glob("*.py")}

    assert [name for name, text in sources.items() if "import random" in text or "from random" in text] == []

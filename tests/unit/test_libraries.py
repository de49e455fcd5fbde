"""PyJWT as the functions import it: cryptography.x509 deferred until something reads it, and nothing else changed.

Each case runs in a fresh interpreter: what is in sys.modules is the point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ROOT / "tests" / "keys"


def fresh(script: str) -> dict:
    """Run `script` in a new interpreter with the functions on the path; it prints one JSON object."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions"), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


SIGN_AND_VERIFY = f"""
import json, sys
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from behest_lambda.libraries import jwt
key = load_pem_private_key(open({str(KEYS / "tenant_private.pem")!r}, "rb").read(), None)
token = jwt.encode({{"sub": "u", "exp": 4102444800}}, key, algorithm="RS256", headers={{"kid": "k"}})
public = jwt.PyJWK.from_dict(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), algorithm="RS256")
claims = jwt.decode(token, public.key, algorithms=["RS256"])
"""


def test_signing_and_verifying_rs256_never_runs_x509() -> None:
    seen = fresh(SIGN_AND_VERIFY + "print(json.dumps({'sub': claims['sub'], "
                 "'x509 ran': sorted(m for m in sys.modules if m.startswith('cryptography.x509.')), "
                 "'registered': type(sys.modules['cryptography.x509']).__name__}))")
    assert seen == {"sub": "u", "x509 ran": [], "registered": "_LazyModule"}


def test_a_plain_import_runs_x509_which_is_what_the_deferral_saves() -> None:
    seen = fresh("import json, sys, jwt\n"
                 "print(json.dumps({'ran': 'cryptography.x509.name' in sys.modules}))")
    assert seen == {"ran": True}


def test_the_first_read_loads_x509_in_full_for_whoever_needs_it() -> None:
    # PyJWT's one use of x509: an HMAC secret that is really a DER certificate is refused. It still is.
    script = SIGN_AND_VERIFY + """
import datetime
ran_before = "cryptography.x509.name" in sys.modules
hmac = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
accepted = hmac.prepare_key(b"an ordinary shared secret of enough length") == b"an ordinary shared secret of enough length"
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test")])
now = datetime.datetime.now(datetime.timezone.utc)
certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .sign(key, hashes.SHA256()))
try:
    hmac.prepare_key(certificate.public_bytes(Encoding.DER))
    refused = ""
except jwt.InvalidKeyError as e:
    refused = str(e)
print(json.dumps({"ran before": ran_before, "accepted": accepted, "refused": "x509 certificate" in refused,
                  "now": type(sys.modules["cryptography.x509"]).__name__}))
"""
    assert fresh(script) == {"ran before": False, "accepted": True, "refused": True, "now": "module"}


def test_an_x509_already_imported_is_left_as_it_is() -> None:
    seen = fresh("import json, sys\nimport cryptography.x509 as before\n"
                 "from behest_lambda.libraries import jwt\n"
                 "print(json.dumps({'same': sys.modules['cryptography.x509'] is before, "
                 "'kind': type(before).__name__}))")
    assert seen == {"same": True, "kind": "module"}

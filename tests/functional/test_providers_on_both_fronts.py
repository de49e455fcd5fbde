"""Every imitated identity provider signs users in on both fronts of `make dev`'s stack, by header and by cookie.

Each stack is `devstack.stack.DevStack` (what `make dev --idp NAME` runs, ports 0): the imitated
provider, moto, the stand-in Behest, the local HTTP API (with API Gateway's JWT authorizer where the
template keeps it, none where the functions verify) and the local Function URL. A user is the
same user on both fronts when the minted Behest token and the requests the stand-in received
carry the provider's user id. Tokens are shaped as each provider's documentation describes them;
the page each test follows is its `docs` parameter.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Iterator, Optional

import jwt
import pytest

from devstack.identity.cookies import cookie_header, supabase_cookie_values, supabase_session
from devstack.identity.shapes import SHAPES
from devstack.stack import DevStack, Ports

DOCS = {name: shape.docs for name, shape in SHAPES.items()}
CLERK_DOCS = "https://clerk.com/docs/guides/sessions/manual-jwt-verification"
SUPABASE_SSR = "https://github.com/supabase/ssr (src/utils/chunker.ts, src/cookies.ts)"
FOREIGN_ORIGIN = "https://evil.example"
HI = {"messages": [{"role": "user", "content": "hi"}]}
STREAM_HI = {**HI, "stream": True}


def providers(*names: str) -> list[Any]:
    """Parameters naming each provider with the page of its documentation its tokens follow."""
    return [pytest.param(name, DOCS[name], id=name) for name in (names or tuple(SHAPES))]


class Answer:
    """One HTTP answer: status, headers (lower-case) and body (JSON when it is JSON)."""

    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.json: Any = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.raw[:300]!r})"


def send(url: str, body: Any = None, headers: Optional[dict[str, str]] = None, method: str = "POST") -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


class Dev:
    """A started stack and what a test asks of it."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        assert stack.api and stack.stream and stack.identity and stack.behest
        self.api = stack.api.url
        self.stream = stack.stream.url
        self.identity = stack.identity
        self.behest = stack.behest
        self.origin = stack.api.url  # the demo page's origin: same-origin dev setup

    def sign_in(self, user: str = "ada", plan: Optional[str] = "pro", **extra: Any) -> dict[str, Any]:
        answer = send(self.identity.url + "/token", {"user": user, "plan": plan, **extra}, {"Origin": self.origin})
        assert answer.status == 200, answer
        return dict(answer.json)

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def cookies(self, pairs: list[tuple[str, str]], origin: Optional[str] = "") -> dict[str, str]:
        headers = {"Cookie": cookie_header(pairs)}
        if origin is not None:
            headers["Origin"] = origin or self.origin
        return headers

    def mint(self, headers: dict[str, str]) -> Answer:
        return send(self.api + "/api/behest/token", {}, headers)

    def relay(self, headers: dict[str, str]) -> Answer:
        return send(self.api + "/v1/chat/completions", HI, headers)

    def stream_relay(self, headers: dict[str, str]) -> Answer:
        return send(self.stream + "/v1/chat/completions", STREAM_HI, headers)

    def upstream_users(self) -> list[str]:
        """The `uid` of every chat request the stand-in received, in order."""
        return [str((r.claims or {}).get("uid")) for r in self.behest.requests if r.path == "/v1/chat/completions"]

    def calls(self, headers: dict[str, str]) -> dict[str, Answer]:
        """The same caller on every route of both fronts: mint, buffered relay, streamed relay."""
        return {"mint": self.mint(headers), "relay": self.relay(headers), "stream": self.stream_relay(headers)}


@pytest.fixture(scope="module")
def dev(request: pytest.FixtureRequest) -> Iterator[Dev]:
    stack = DevStack(Ports(0, 0, 0, 0, 0, 0), chunk_delay=0, idp=request.param).start()
    try:
        yield Dev(stack)
    finally:
        stack.stop()


def minted_user(answer: Answer) -> str:
    assert answer.status == 200, answer
    return str(jwt.decode(answer.json["token"], options={"verify_signature": False})["uid"])


def assert_same_user_everywhere(dev: Dev, headers: dict[str, str], user_id: str) -> None:
    dev.behest.clear_records()
    answers = dev.calls(headers)

    assert minted_user(answers["mint"]) == user_id
    assert answers["relay"].status == 200, answers["relay"]
    assert answers["stream"].status == 200, answers["stream"]
    assert b"data: [DONE]" in answers["stream"].raw
    assert dev.upstream_users() == [user_id, user_id]


def assert_refused(answer: Answer) -> None:
    """A JSON 4xx in OpenAI's error shape (or API Gateway's own 401), and nothing minted."""
    assert 400 <= answer.status < 500, answer
    assert isinstance(answer.json, dict), answer
    assert "token" not in answer.json
    assert "error" in answer.json or answer.json == {"message": "Unauthorized"}, answer


# --- signed in, on both fronts -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dev", "docs"), providers(), indirect=["dev"])
def test_a_signed_in_user_is_the_providers_user_id_on_both_fronts_by_bearer_token(dev: Dev, docs: str) -> None:
    signed_in = dev.sign_in("ada")

    assert signed_in["user_id"] == dev.identity.user_id("ada") != ""
    assert_same_user_everywhere(dev, dev.bearer(signed_in["id_token"]), dev.identity.user_id("ada"))


@pytest.mark.parametrize(("dev", "docs"), providers("clerk", "supabase"), indirect=["dev"])
def test_a_signed_in_user_is_the_same_user_on_both_fronts_by_session_cookie(dev: Dev, docs: str) -> None:
    signed_in = dev.sign_in("grace")
    pairs = [(c["name"], c["value"]) for c in signed_in["cookies"]]

    assert [name for name, _ in pairs] == [dev.identity.cookie_name]
    assert_same_user_everywhere(dev, dev.cookies(pairs), dev.identity.user_id("grace"))


@pytest.mark.parametrize(("dev", "docs"), [pytest.param("supabase", SUPABASE_SSR, id="supabase")], indirect=["dev"])
def test_a_large_supabase_session_in_chunked_cookies_signs_the_user_in_on_both_fronts(dev: Dev, docs: str) -> None:
    signed_in = dev.sign_in("linus", user_metadata={"bio": "x" * 2500, "avatar_url": "https://example.com/a.png"})
    pairs = [(c["name"], c["value"]) for c in signed_in["cookies"]]

    assert [name for name, _ in pairs] == [f"{dev.identity.cookie_name}.{i}" for i in range(len(pairs))]
    assert len(pairs) >= 2 and pairs[0][1].startswith("base64-")
    assert_same_user_everywhere(dev, dev.cookies(pairs), dev.identity.user_id("linus"))


@pytest.mark.parametrize(("dev", "docs"), providers("okta", "entra"), indirect=["dev"])
def test_okta_and_entra_users_are_keyed_to_their_stable_id_not_sub(dev: Dev, docs: str) -> None:
    token = dev.sign_in("ada")["id_token"]
    claims = jwt.decode(token, options={"verify_signature": False})

    assert claims["sub"] != dev.identity.user_id("ada")
    assert minted_user(dev.mint(dev.bearer(token))) == dev.identity.user_id("ada")


@pytest.mark.parametrize(("dev", "docs"), providers("supabase"), indirect=["dev"])
def test_a_tier_nested_in_supabase_app_metadata_reaches_the_minted_token(dev: Dev, docs: str) -> None:
    token = dev.sign_in("ada", plan="pro")["id_token"]

    answer = dev.mint(dev.bearer(token))

    assert answer.status == 200, answer
    assert jwt.decode(answer.json["token"], options={"verify_signature": False}).get("tier") == 2


# --- attacks through the fronts ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dev", "docs"), [pytest.param("clerk", CLERK_DOCS, id="clerk"),
                                           pytest.param("supabase", SUPABASE_SSR, id="supabase")], indirect=["dev"])
@pytest.mark.parametrize("origin", [FOREIGN_ORIGIN, None, "null"], ids=["foreign-origin", "no-origin", "null-origin"])
def test_a_session_cookie_without_an_allowed_origin_is_refused_on_both_fronts(dev: Dev, docs: str,
                                                                               origin: Optional[str]) -> None:
    pairs = [(c["name"], c["value"]) for c in dev.sign_in("ada")["cookies"]]

    for answer in dev.calls(dev.cookies(pairs, origin=origin)).values():
        assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [pytest.param("clerk", CLERK_DOCS, id="clerk"),
                                           pytest.param("supabase", SUPABASE_SSR, id="supabase")], indirect=["dev"])
def test_two_session_cookies_of_the_same_name_are_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    ada = [(c["name"], c["value"]) for c in dev.sign_in("ada")["cookies"]]
    eve = [(c["name"], c["value"]) for c in dev.sign_in("eve")["cookies"]]

    for answer in dev.calls(dev.cookies(ada + eve)).values():
        assert_refused(answer)


def _chunks(dev: Dev, user: str) -> list[tuple[str, str]]:
    session = dev.sign_in(user, user_metadata={"bio": "y" * 2500})
    return [(c["name"], c["value"]) for c in session["cookies"]]


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


@pytest.mark.parametrize(("dev", "docs"), [pytest.param("supabase", SUPABASE_SSR, id="supabase")], indirect=["dev"])
def test_tampered_supabase_cookie_chunks_are_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    chunks = _chunks(dev, "ada")
    assert len(chunks) >= 2
    flipped_payload = [chunks[0], (chunks[1][0], _flip(chunks[1][1], 5)), *chunks[2:]]
    not_base64 = [(chunks[0][0], chunks[0][1][:30] + "%%%" + chunks[0][1][33:]), *chunks[1:]]
    missing_first = chunks[1:]

    for cookies in (flipped_payload, not_base64, missing_first):
        for answer in dev.calls(dev.cookies(cookies)).values():
            assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [pytest.param("supabase", SUPABASE_SSR, id="supabase")], indirect=["dev"])
def test_oversized_supabase_cookie_chunks_are_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    token = dev.sign_in("ada")["id_token"]
    session = supabase_session(token, {"id": dev.identity.user_id("ada"), "padding": "z" * 4000}, 0, 3600)
    name = str(dev.identity.cookie_name)
    # Chunks larger than a browser keeps (4096 bytes a cookie), and more chunks than any session needs.
    too_large = supabase_cookie_values(name, session, chunk_chars=6000)
    too_many = supabase_cookie_values(name, session, chunk_chars=150)
    assert len(too_large) == 2 and len(too_many) > 30

    for cookies in (too_large, too_many):
        for answer in dev.calls(dev.cookies(cookies)).values():
            assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [pytest.param("clerk", CLERK_DOCS, id="clerk")], indirect=["dev"])
@pytest.mark.parametrize("azp", [None, FOREIGN_ORIGIN], ids=["azp-absent", "azp-foreign"])
def test_a_clerk_token_whose_azp_is_absent_or_foreign_is_refused_on_both_fronts(dev: Dev, docs: str,
                                                                               azp: Optional[str]) -> None:
    token = dev.identity.issue("ada", origin=azp)

    assert "aud" not in jwt.decode(token, options={"verify_signature": False})
    for answer in dev.calls(dev.bearer(token)).values():
        assert_refused(answer)
    for answer in dev.calls(dev.cookies([("__session", token)])).values():
        assert_refused(answer)


def _forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = part(json.dumps(header).encode()) + "." + part(json.dumps(payload).encode())
    return signing_input + "." + part(signature)


def _hmac_with_public_key(dev: Dev) -> list[str]:
    """HS256 tokens whose secret is what anyone can read from the JWKS: the PEM, and the JWK's JSON."""
    import hashlib
    import hmac

    payload = dev.identity.payload("ada", origin=dev.origin)
    header = {"alg": "HS256", "typ": "JWT", "kid": dev.identity.kid}
    jwk_text = json.dumps(dev.identity.jwks()["keys"][0]).encode()
    tokens = []
    for secret in (dev.identity.keys.public_pem_bytes(), jwk_text):
        unsigned = _forge(header, payload, b"").rsplit(".", 1)[0]
        tokens.append(unsigned + "." + base64.urlsafe_b64encode(
            hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()).decode().rstrip("="))
    return tokens


@pytest.mark.parametrize(("dev", "docs"), providers("supabase", "okta", "clerk"), indirect=["dev"])
def test_an_hmac_token_signed_with_the_jwks_keys_bytes_is_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    for token in _hmac_with_public_key(dev):
        for answer in dev.calls(dev.bearer(token)).values():
            assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), providers("supabase", "okta"), indirect=["dev"])
def test_a_token_whose_alg_does_not_match_its_key_type_is_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    payload = dev.identity.payload("ada", origin=dev.origin)
    # The provider's kid with a signature of the other key type (and that type's alg), then with none at all.
    other = (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256") \
        if dev.identity.algorithm.startswith("ES") else (ec.generate_private_key(ec.SECP256R1()), "ES256")
    mismatched = jwt.encode(payload, other[0], algorithm=other[1], headers={"kid": dev.identity.kid})
    unsigned = _forge({"alg": "none", "typ": "JWT", "kid": dev.identity.kid}, payload, b"")
    genuine = dev.identity.issue("ada", origin=dev.origin)
    relabelled = _forge({"alg": "PS256" if dev.identity.algorithm == "RS256" else "ES384", "typ": "JWT",
                         "kid": dev.identity.kid}, payload, b"") + genuine.rsplit(".", 1)[1]

    for token in (mismatched, unsigned, relabelled):
        for answer in dev.calls(dev.bearer(token)).values():
            assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), providers("supabase"), indirect=["dev"])
def test_an_es256_signature_in_der_rather_than_raw_r_s_is_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = dev.identity.payload("ada", origin=dev.origin)
    unsigned = _forge({"alg": "ES256", "typ": "JWT", "kid": dev.identity.kid}, payload, b"").rsplit(".", 1)[0]
    key = dev.identity.keys.private
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.sign(unsigned.encode(), ec.ECDSA(hashes.SHA256()))
    token = unsigned + "." + base64.urlsafe_b64encode(der).decode().rstrip("=")

    for answer in dev.calls(dev.bearer(token)).values():
        assert_refused(answer)


@pytest.fixture
def fresh_supabase() -> Iterator[Dev]:
    """A stack whose functions have not yet fetched the provider's discovery document."""
    stack = DevStack(Ports(0, 0, 0, 0, 0, 0), chunk_delay=0, idp="supabase").start()
    try:
        yield Dev(stack)
    finally:
        stack.stop()


@pytest.mark.parametrize("fault", ["redirect", "huge", "plain_http_jwks_uri"])
def test_a_discovery_document_that_redirects_is_huge_or_names_plain_http_keys_is_never_followed(
    fresh_supabase: Dev, fault: str
) -> None:
    """https://openid.net/specs/openid-connect-discovery-1_0.html: the document is at issuer + the well-known path,
    and its jwks_uri is https; no redirect is followed, and a document over the size cap is not read."""
    dev = fresh_supabase
    token = dev.sign_in("ada")["id_token"]
    dev.identity.discovery_fault = fault

    answers = dev.calls(dev.bearer(token))

    # Not the caller's fault, so not a 4xx: the provider's keys cannot be had safely, as when it is unreachable.
    for answer in answers.values():
        assert answer.status == 503, answer
        assert answer.json["error"]["code"] == "identity_keys_unavailable", answer
    assert dev.identity.jwks_requests == 0
    assert dev.upstream_users() == []


def test_a_supabase_project_on_its_legacy_jwt_secret_signs_users_in_on_both_fronts() -> None:
    """https://supabase.com/docs/guides/auth/signing-keys: the legacy JWT secret signs HS256 and publishes no key.

    `make dev --idp supabase --legacy-hs256` keeps that secret in the key secret (moto), never in a variable.
    """
    stack = DevStack(Ports(0, 0, 0, 0, 0, 0), chunk_delay=0, idp="supabase", legacy_secret=True).start()
    try:
        dev = Dev(stack)
        signed_in = dev.sign_in("ada")
        header = jwt.get_unverified_header(signed_in["id_token"])

        secret = dev.identity.legacy_secret
        assert header["alg"] == "HS256" and dev.identity.jwks() == {"keys": []}
        assert secret and not any(secret in value for value in stack.env.values())
        assert_same_user_everywhere(dev, dev.bearer(signed_in["id_token"]), dev.identity.user_id("ada"))
        pairs = [(c["name"], c["value"]) for c in signed_in["cookies"]]
        assert_same_user_everywhere(dev, dev.cookies(pairs), dev.identity.user_id("ada"))
        # Signed with another secret: refused.
        forged = jwt.encode(dev.identity.payload("ada"), "another-secret-of-at-least-32-characters!",
                            algorithm="HS256")
        for answer in dev.calls(dev.bearer(forged)).values():
            assert_refused(answer)
    finally:
        stack.stop()


@pytest.mark.parametrize(("dev", "docs"), providers("clerk", "supabase", "okta"), indirect=["dev"])
def test_cors_allows_credentials_for_exactly_the_allowed_origins_where_a_cookie_may_carry_the_token(
    dev: Dev, docs: str
) -> None:
    """https://developer.mozilla.org/en-US/docs/Web/HTTP/Guides/CORS#requests_with_credentials: a credentialed
    answer needs Access-Control-Allow-Credentials: true and the exact origin, never *."""
    cookie = dev.identity.cookie_name is not None
    token = dev.sign_in("ada")["id_token"]
    for front in (dev.api + "/api/behest/token", dev.stream + "/v1/chat/completions"):
        for origin, allowed in ((dev.origin, True), (FOREIGN_ORIGIN, False)):
            preflight = send(front, None, {"Origin": origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type"}, method="OPTIONS")
            answer = send(front, STREAM_HI, {"Origin": origin, **dev.bearer(token)})
            for headers in (preflight.headers, answer.headers):
                assert headers.get("access-control-allow-origin") == (origin if allowed else None), front
                expected = "true" if allowed and cookie else None
                assert headers.get("access-control-allow-credentials") == expected, front

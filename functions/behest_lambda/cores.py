"""The cores behind the route table: request + verified identity → reply. They know nothing of API Gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .errors import BehestLambdaError, UpstreamError
from .identity import Identity, identity_from_claims
from .key_source import KeySource, key_source_for
from .mint import Minter, MintRequest
from .reply import Core, Identify, Reply, json_reply
from .request import Request
from .settings import RelaySettings, Settings
from .telemetry import Telemetry
from .usage import BROKEN, CLIENT_GONE, OK, UsageMeter

if TYPE_CHECKING:
    from .relay import Relay

def build_cores(names: set[str], settings: Settings, telemetry: Telemetry, *, verify_callers: bool,
                key_source: Optional[KeySource] = None) -> tuple[dict[str, Core], Optional[Identify]]:
    """The cores `names` need, sharing one key source, minter and relay; and the caller check where one is needed.

    `verify_callers`: no JWT authorizer stands in front (the Function URL, or an HTTP API whose preset
    API Gateway cannot verify), so the function verifies the caller's token itself.
    """
    source = key_source or key_source_for(settings.key, telemetry)
    minter = Minter(settings.mint, source)
    cores: dict[str, Core] = {}
    if "token" in names:
        cores["token"] = token_core(minter, telemetry)
    relayed = names - {"token"}
    if relayed:
        from .relay import Relay  # the token function never loads the relay

        relay = Relay(settings.relay, minter)
        for name in relayed:
            cores[name] = relay_core(name, relay, settings.relay, telemetry)
    identify: Optional[Identify] = None
    if verify_callers:
        # Only where no JWT authorizer verified the caller: the authorizer path never loads the verifier.
        from .caller_token import CallerTokenVerifier, caller_token

        verifier = CallerTokenVerifier.from_settings(settings.caller, telemetry,
                                                     hmac_secret=lambda: source.get().caller_secret)

        def identify(request: Request) -> Identity:
            return identity_from_claims(verifier.claims(caller_token(request, settings.caller)), settings.identity)

    return cores, identify


def token_core(minter: Minter, telemetry: Telemetry) -> Core:
    """POST /api/behest/token: `{token, ttl, sessionId, expiresAt}` for the verified user."""

    def core(request: Request, identity: Identity) -> Reply:
        asked = MintRequest.from_body(request.json_object())
        result = minter.mint(identity, asked)
        telemetry.info("token minted", uid=identity.user_id, sid=result.session_id, kid=result.kid, ttl=result.ttl,
                       tier=identity.tier, continued=asked.session_id is not None, caller=identity.caller)
        telemetry.metric("TokenMinted")
        return json_reply(200, result.as_body())

    return core


def relay_core(route: str, relay: Relay, settings: RelaySettings, telemetry: Telemetry) -> Core:
    """A relayed route: policy, one mint, Behest's answer passed on; one usage record when it has been sent."""
    from .relay import POLICIES, meter_for

    policy = POLICIES[route]

    def core(request: Request, identity: Identity) -> Reply:
        call = policy(request, identity, settings)
        meter = meter_for(identity, call)
        meter.caller = identity.caller
        try:
            answer = relay.open(identity, call, meter, deadline=request.deadline)
        except UpstreamError as e:
            meter.status = e.status
            record_usage(telemetry, meter, "upstream_error", e)
            raise

        def finished(failure: Optional[BehestLambdaError], completed: bool) -> None:
            outcome = BROKEN if failure is not None else OK if completed else CLIENT_GONE
            record_usage(telemetry, meter, outcome, failure)

        return Reply(answer.status, answer.headers, answer.chunks, stream=answer.stream, on_end=finished,
                     error_event=answer.error_event)

    return core


def record_usage(telemetry: Telemetry, meter: UsageMeter, outcome: str, failure: Optional[BehestLambdaError]) -> None:
    """The usage record (one log line, see README "Usage and cost") and the per-model metrics."""
    record = meter.record(outcome)
    if failure is None:
        telemetry.info("usage", **record)
    else:
        telemetry.warning("usage", **record, code=failure.code, detail=failure.message)
    if outcome == "upstream_error":
        telemetry.metric("UpstreamErrors", route=meter.route)
        return
    # Low-cardinality dimensions only: the route and the model Behest answered with (never the user).
    model = meter.model or meter.model_requested or "default"
    telemetry.metric("Relayed")  # the alarms' denominator (upstream error rate)
    telemetry.metric("Requests", route=meter.route, model=model)
    for name, value in (("InputTokens", meter.input_tokens), ("OutputTokens", meter.output_tokens)):
        if value:
            telemetry.metric(name, value, route=meter.route, model=model)
    if failure is not None:
        telemetry.metric("StreamBrokeOff", code=failure.code)

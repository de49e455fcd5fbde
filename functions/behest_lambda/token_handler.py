"""Lambda entry point for `POST /api/behest/token`.

Answers `{token, ttl, sessionId, expiresAt}`: a per-user Behest JWT for the caller whose
identity API Gateway's JWT authorizer verified. The body may ask for a `ttl` and a
`sessionId` to continue; nothing in the request can choose who the token is for.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from . import apigw
from .errors import BehestLambdaError
from .identity import identity_from_event
from .key_source import key_source_for
from .mint import Minter, MintRequest
from .settings import Settings
from .telemetry import Telemetry

SERVICE = "behest-token"


class TokenFunction:
    """The token route, built once per container from the environment (or from parts, in tests)."""

    def __init__(self, settings: Settings, minter: Minter, telemetry: Telemetry) -> None:
        self.settings = settings
        self.minter = minter
        self.telemetry = telemetry

    @classmethod
    def from_env(cls, telemetry: Telemetry, environ: Optional[Mapping[str, str]] = None) -> TokenFunction:
        """Read the environment once; a configuration error names the variables at fault."""
        settings = Settings.from_env(environ)
        telemetry.configure(settings.log_level, settings.metrics_namespace)
        return cls(settings, Minter(settings, key_source_for(settings, telemetry)), telemetry)

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Parse the event, mint, shape the answer; each known failure becomes its status."""
        try:
            apigw.require_post(event)
            identity = identity_from_event(event, self.settings)
            request = MintRequest.from_body(apigw.json_object_body(event, self.settings.max_body_bytes))
            result = self.minter.mint(identity, request)
        except BehestLambdaError as e:
            return apigw.refusal(self.telemetry, e)
        self.telemetry.info(
            "token minted", uid=identity.user_id, sid=result.session_id, kid=result.kid, ttl=result.ttl,
            tier=identity.tier, continued=request.session_id is not None,
        )
        self.telemetry.metric("TokenMinted")
        return apigw.json_response(200, result.as_body())


handler = apigw.entry_point(TokenFunction.from_env, Telemetry(SERVICE))

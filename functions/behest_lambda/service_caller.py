"""Who calls the server-to-server front, and for whom: a trusted role's session, acting for a user it names.

Lambda has already checked the SigV4 signature and the invoke permission of a Function URL with
AuthType AWS_IAM, and put the caller in `requestContext.authorizer.iam`. The function checks again
that the caller is a session of a role in BEHEST_TRUSTED_ROLE_ARNS (so a widened IAM policy grants
nothing here), then takes the user from `X-Behest-User-Id` and the tier from `X-Behest-Tier`,
within the bounds a verified token's claims get. No other front reads these headers.
"""

from __future__ import annotations

import re
from typing import Optional

from .errors import ForbiddenError, InvalidRequestError
from .identity import MAX_USER_ID_LENGTH, Identity, tier_of
from .request import Request
from .settings import IdentitySettings, ServiceSettings, TrustedRole

USER_ID_HEADER = "x-behest-user-id"
TIER_HEADER = "x-behest-tier"
# A role's session as STS names it: the role's name (never its path) and the session's name.
ASSUMED_ROLE_ARN = re.compile(r"arn:(?P<partition>aws(?:-[a-z]+)*):sts::(?P<account>[0-9]{12}):assumed-role/"
                              r"(?P<name>[\w+=,.@-]{1,64})/(?P<session>[\w+=,.@-]{2,64})", re.ASCII)


class ServiceCaller:
    """The server-to-server front's `Identify`: the trusted role, then the user it acts for."""

    def __init__(self, service: ServiceSettings, identity: IdentitySettings) -> None:
        self._roles = {(r.partition, r.account, r.name): r for r in service.trusted_roles}
        # The tier header is read by the claims' own rules (plan names, ASCII digits, the accepted range).
        self._tier_settings = identity._replace(tier_claim=TIER_HEADER)

    def __call__(self, request: Request) -> Identity:
        role = self.trusted_role(request)
        user_id = (request.header(USER_ID_HEADER) or "").strip()
        if not user_id:
            raise InvalidRequestError("name the user this request is for in the X-Behest-User-Id header",
                                      code="user_id_required")
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise InvalidRequestError(f"X-Behest-User-Id is longer than {MAX_USER_ID_LENGTH} characters")
        return Identity(user_id=user_id, tier=tier_of(request.headers, self._tier_settings), caller=role.arn)

    def trusted_role(self, request: Request) -> TrustedRole:
        """The listed role whose session signed the request, or 403 caller_not_trusted."""
        arn = (request.iam or {}).get("userArn")
        found = ASSUMED_ROLE_ARN.fullmatch(arn) if isinstance(arn, str) else None
        role: Optional[TrustedRole] = None
        if found is not None:
            role = self._roles.get((found["partition"], found["account"], found["name"]))
        if role is None:
            raise ForbiddenError("the signing identity is not a session of a role in TrustedServiceRoleArns",
                                 code="caller_not_trusted")
        return role

"""The server-to-server front's caller check: Lambda's iam context, the trusted roles, the user headers; no network."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behest_lambda.app import Service
from behest_lambda.errors import ConfigurationError, ForbiddenError, InvalidRequestError
from behest_lambda.identity import MAX_USER_ID_LENGTH, Identity
from behest_lambda.request import Request
from behest_lambda.routes import SERVICE_FUNCTION, SERVICE_URL, STREAM_FUNCTION, routes_for
from behest_lambda.service_caller import ServiceCaller
from behest_lambda.settings import Settings
from tests.support import CapturedTelemetry, load_event, sign_env

DIGEST_ROLE = "arn:aws:iam::123456789012:role/digest-worker"
PATHED_ROLE = "arn:aws:iam::123456789012:role/service-role/batch/summariser"


def caller(*roles: str, **identity: Any) -> ServiceCaller:
    settings = Settings.from_env(sign_env(BEHEST_TRUSTED_ROLE_ARNS=",".join(roles)))
    return ServiceCaller(settings.service, settings.identity._replace(**identity))


def request(user_arn: Optional[str] = "arn:aws:sts::123456789012:assumed-role/digest-worker/nightly",
            **headers: str) -> Request:
    event = load_event("service_chat_completion")
    event["headers"] = {"x-behest-user-id": "user-42", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if user_arn is None:
        del event["requestContext"]["authorizer"]
    else:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = user_arn
    return Request.from_event(event, 1 << 20)


def test_the_sample_event_is_a_session_of_a_listed_role_acting_for_user_42() -> None:
    event = load_event("service_chat_completion")

    identity = caller(DIGEST_ROLE)(Request.from_event(event, 1 << 20))

    assert identity == Identity("user-42", 2, DIGEST_ROLE)


def test_a_session_of_a_role_with_a_path_maps_to_that_role() -> None:
    found = caller(DIGEST_ROLE, PATHED_ROLE)(request("arn:aws:sts::123456789012:assumed-role/summariser/job-7"))

    assert found.caller == PATHED_ROLE


@pytest.mark.parametrize("user_arn", [
    "arn:aws:sts::123456789012:assumed-role/other-service/nightly",  # another role
    "arn:aws:sts::210987654321:assumed-role/digest-worker/nightly",  # the same name in another account
    "arn:aws-cn:sts::123456789012:assumed-role/digest-worker/nightly",  # another partition
    "arn:aws:iam::123456789012:user/digest-worker",  # an IAM user of that name
    "arn:aws:iam::123456789012:role/digest-worker",  # a role ARN is never what Lambda reports for a session
    "arn:aws:sts::123456789012:assumed-role/digest-worker",  # no session
    "arn:aws:sts::123456789012:federated-user/digest-worker",
    "",
])
def test_anything_but_a_session_of_a_listed_role_is_refused_with_caller_not_trusted(user_arn: str) -> None:
    with pytest.raises(ForbiddenError) as refused:
        caller(DIGEST_ROLE)(request(user_arn))

    assert (refused.value.status, refused.value.code) == (403, "caller_not_trusted")


def test_a_request_without_lambdas_iam_context_is_refused_with_caller_not_trusted() -> None:
    with pytest.raises(ForbiddenError) as refused:
        caller(DIGEST_ROLE)(request(None))

    assert refused.value.code == "caller_not_trusted"


@pytest.mark.parametrize("user_id", ["", "   "])
def test_a_request_naming_no_user_is_a_400(user_id: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        caller(DIGEST_ROLE)(request(x_behest_user_id=user_id))

    assert (refused.value.status, refused.value.code) == (400, "user_id_required")


def test_a_user_id_has_the_length_bound_of_a_claim() -> None:
    assert caller(DIGEST_ROLE)(request(x_behest_user_id="u" * MAX_USER_ID_LENGTH)).user_id == "u" * MAX_USER_ID_LENGTH
    with pytest.raises(InvalidRequestError):
        caller(DIGEST_ROLE)(request(x_behest_user_id="u" * (MAX_USER_ID_LENGTH + 1)))


def test_the_tier_header_follows_the_claims_rules() -> None:
    check = caller(DIGEST_ROLE, tier_map={"pro": 2}, default_tier=1, tier_max=10)

    assert check(request(x_behest_tier="7")).tier == 7
    assert check(request(x_behest_tier="pro")).tier == 2
    assert check(request(x_behest_tier="²")).tier == 1
    assert check(request()).tier == 1
    with pytest.raises(ForbiddenError) as refused:
        check(request(x_behest_tier="11"))
    assert (refused.value.status, refused.value.code) == (403, "tier_out_of_range")


def test_the_trusted_roles_must_be_iam_role_arns() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(sign_env(BEHEST_TRUSTED_ROLE_ARNS=f"{DIGEST_ROLE},arn:aws:iam::123456789012:user/bob"))

    assert "BEHEST_TRUSTED_ROLE_ARNS" in refused.value.message and "user/bob" in refused.value.message


def test_the_server_to_server_function_will_not_start_without_a_trusted_role() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Service.from_env(SERVICE_FUNCTION, CapturedTelemetry(), sign_env())

    assert "BEHEST_TRUSTED_ROLE_ARNS" in refused.value.message


def test_the_server_to_server_function_serves_every_route_of_the_table_the_token_route_included() -> None:
    service = Service.from_env(SERVICE_FUNCTION, CapturedTelemetry(), sign_env(BEHEST_TRUSTED_ROLE_ARNS=DIGEST_ROLE))

    assert service.front == SERVICE_URL
    assert {r.path for r in service.routes} == {r.path for r in routes_for(SERVICE_URL)}
    assert "/api/behest/token" in {r.path for r in service.routes}
    assert {r.path for r in routes_for(SERVICE_URL)} > {r.path for r in Service.from_env(
        STREAM_FUNCTION, CapturedTelemetry(), sign_env(BEHEST_CALLER_ISSUER="https://idp.example.com",
                                                       BEHEST_CALLER_AUDIENCE="app")).routes}


def test_every_metric_is_also_published_with_the_front_in_the_same_record() -> None:
    telemetry = CapturedTelemetry()
    Service.from_env(SERVICE_FUNCTION, telemetry, sign_env(BEHEST_TRUSTED_ROLE_ARNS=DIGEST_ROLE))
    telemetry.metric("Relayed")
    telemetry.metric("Requests", route="chat", model="m")
    telemetry.flush()

    records = [r for r in telemetry.records if "_aws" in r]
    sets = [r["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for r in records]
    assert sets == [[["service"], ["service", "front"]],
                    [["model", "route", "service"], ["model", "route", "service", "front"]]]
    assert {r["front"] for r in records} == {SERVICE_URL}


SESSION = "arn:aws:sts::123456789012:assumed-role/digest-worker/nightly"
_ANY = st.one_of(st.none(), st.text(max_size=300), st.integers(), st.lists(st.text(max_size=5), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(iam=st.one_of(_ANY, st.fixed_dictionaries({"userArn": st.one_of(st.just(SESSION), _ANY)})),
       user_id=_ANY, tier=_ANY)
def test_whatever_the_context_and_headers_hold_the_answer_is_an_identity_or_a_4xx(iam: Any, user_id: Any,
                                                                                   tier: Any) -> None:
    event = load_event("service_chat_completion")
    event["requestContext"]["authorizer"] = {"iam": iam}
    event["headers"] = {name: value for name, value in (("x-behest-user-id", user_id), ("x-behest-tier", tier))
                        if value is not None}
    try:
        identity = caller(DIGEST_ROLE)(Request.from_event(event, 1 << 20))
    except (ForbiddenError, InvalidRequestError) as refused:
        assert refused.status in (400, 403)
    else:
        # Only strings reach the headers (an event's other header values are dropped), and the trusted session passes.
        assert identity.caller == DIGEST_ROLE and identity.user_id == user_id.strip()

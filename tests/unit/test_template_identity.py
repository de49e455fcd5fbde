"""template.yaml per identity provider: which front verifies, and whether browsers may send credentials.

SAM fixes an HttpApi's DefaultAuthorizer and an event's Auth when it transforms the template, so the
authorizer cannot be switched there by a parameter. The template instead writes each route's
security block as an Fn::If, which SAM keeps and CloudFormation resolves. These tests transform the
template with aws-sam-translator (with each preset's parameter values, as CloudFormation's transform
receives them), then resolve the conditions as CloudFormation would, and compare the outcome with
providers.py's own answer for every preset, with and without a cookie named in AuthCookieName.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from behest_lambda import settings as names
from behest_lambda.providers import DEFAULT_PROVIDER, PROVIDERS
from behest_lambda.routes import HTTP_API, routes_for
from tests.unit.test_template import REGION, _api_body, _with_s3_code
from tests.unit.test_template_operations import _Stack

AUTHORIZER = [{"UserJwt": []}]
NO_AUTHORIZER = [{"NONE": []}]  # as SAM writes an event's "Authorizer: NONE"
COOKIE_CASES = [(name, cookie) for name in PROVIDERS for cookie in ("", "app_session")]
ISSUERS = {
    "oidc": "https://login.example.com", "cognito": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123",
    "auth0": "https://tenant.auth0.com/", "clerk": "https://clerk.example.com",
    "supabase": "https://abcdefghijklmnop.supabase.co/auth/v1", "firebase": "https://securetoken.google.com/proj-1",
    "okta": "https://example.okta.com/oauth2/default",
    "entra": "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
    "google": "https://accounts.google.com", "keycloak": "https://id.example.com/realms/app",
}


class _Deployed(_Stack):
    """_Stack, plus lists (CommaDelimitedList), Fn::Join and the rule functions the identity parameters use."""

    def __init__(self, template: dict[str, Any], **parameters: Any) -> None:
        super().__init__(template, REGION, **parameters)
        for name, parameter in template["Parameters"].items():
            if parameter["Type"] == "CommaDelimitedList" and isinstance(self.values[name], str):
                self.values[name] = self.values[name].split(",")

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (kind, argument), = node.items()
            if kind == "Fn::Join":
                return argument[0].join(self.value(argument[1]))
            if kind == "Fn::EachMemberEquals":
                members, expected = self.value(argument[0]), self.value(argument[1])
                return all(member == expected for member in members)
            if kind == "Fn::Contains":
                return self.value(argument[1]) in self.value(argument[0])
        return super().value(node)

    def rules_broken(self) -> list[str]:
        """The AssertDescription of every rule whose assertion fails, as CloudFormation refuses the deploy."""
        broken = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.value(rule["RuleCondition"]):
                continue
            broken += [a["AssertDescription"] for a in rule["Assertions"] if not self.value(a["Assert"])]
        return broken


def transformed(sam: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The template as CloudFormation's SAM transform makes it for these parameter values."""
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    result: dict[str, Any] = translator.translate(_with_s3_code(sam), parameter_values=parameters,
                                                  get_managed_policy_map=lambda: {})
    return result


def parameters_for(name: str, cookie: str) -> dict[str, str]:
    return {"IdentityProvider": name, "AuthJwtIssuer": ISSUERS[name], "AuthJwtAudience": "app-client-1",
            "AuthCookieName": cookie, "AllowedOrigins": "https://app.example.com"}


def test_the_identity_provider_parameter_offers_exactly_the_presets(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["IdentityProvider"]

    assert parameter["AllowedValues"] == list(PROVIDERS)
    assert parameter["Default"] == DEFAULT_PROVIDER
    assert set(ISSUERS) == set(PROVIDERS)


def test_each_example_issuer_has_its_presets_shape() -> None:
    for name, issuer in ISSUERS.items():
        assert PROVIDERS[name].issuer_problem(issuer) is None, name


@pytest.mark.parametrize(("name", "cookie"), COOKIE_CASES)
def test_the_http_api_keeps_its_jwt_authorizer_exactly_where_api_gateway_can_verify_the_preset(
    sam: dict[str, Any], name: str, cookie: str
) -> None:
    parameters = parameters_for(name, cookie)
    cfn = transformed(sam, **parameters)
    deployed = _Deployed(cfn, **parameters)
    function_verifies = PROVIDERS[name].function_verifies(cookie or None)

    body = deployed.value(_api_body(cfn["Resources"]))
    for route in routes_for(HTTP_API):
        security = body["paths"][route.path][route.method.lower()]["security"]
        assert security == (NO_AUTHORIZER if function_verifies else AUTHORIZER), (name, cookie, route)
    environment = deployed.value(sam["Globals"]["Function"]["Environment"]["Variables"])
    assert environment[names.BEHEST_VERIFY_CALLERS] == ("true" if function_verifies else "false")
    assert environment[names.BEHEST_IDENTITY_PROVIDER] == name
    assert environment[names.BEHEST_CALLER_COOKIE] == cookie


@pytest.mark.parametrize(("name", "cookie"), COOKIE_CASES)
def test_both_fronts_allow_credentials_exactly_where_a_cookie_carries_the_token(
    sam: dict[str, Any], name: str, cookie: str
) -> None:
    parameters = parameters_for(name, cookie)
    cfn = transformed(sam, **parameters)
    deployed = _Deployed(cfn, **parameters)
    uses_cookie = PROVIDERS[name].cookie_name(ISSUERS[name], cookie or None) is not None

    api_cors = deployed.value(_api_body(cfn["Resources"])["x-amazon-apigateway-cors"])
    url = cfn["Resources"]["StreamFunctionUrl"]  # the public URL (the server-to-server one has no CORS)
    url_cors = deployed.value(url["Properties"]["Cors"])
    assert api_cors["allowCredentials"] is uses_cookie
    assert url_cors["AllowCredentials"] is uses_cookie
    # Credentials go only to exact origins: the allowed origins, never *.
    assert api_cors["allowOrigins"] == url_cors["AllowOrigins"] == ["https://app.example.com"]


def test_a_cookie_deployment_with_a_wildcard_origin_is_refused_before_anything_is_created(sam: dict[str, Any]) -> None:
    wildcard = {**parameters_for("supabase", ""), "AllowedOrigins": "*"}

    assert _Deployed(sam, **wildcard).rules_broken() == [
        "where a cookie carries the token, AllowedOrigins must list exact origins, not *"]
    assert _Deployed(sam, **{**wildcard, "IdentityProvider": "okta", "AuthJwtIssuer": ISSUERS["okta"]}).rules_broken() == []


def test_an_audience_is_required_except_for_clerk(sam: dict[str, Any]) -> None:
    for name in PROVIDERS:
        broken = _Deployed(sam, **{**parameters_for(name, ""), "AuthJwtAudience": ""}).rules_broken()
        assert broken == ([] if name == "clerk" else ["AuthJwtAudience is required (only clerk's tokens carry no aud)"])
        assert _Deployed(sam, **parameters_for(name, "")).rules_broken() == []


def test_the_unused_authorizer_of_a_clerk_stack_still_has_an_audience(sam: dict[str, Any]) -> None:
    parameters = {**parameters_for("clerk", ""), "AuthJwtAudience": ""}
    cfn = transformed(sam, **parameters)
    authorizer = _api_body(cfn["Resources"])["components"]["securitySchemes"]["UserJwt"]

    configuration = _Deployed(cfn, **parameters).value(authorizer["x-amazon-apigateway-authorizer"]["jwtConfiguration"])
    assert configuration == {"issuer": ISSUERS["clerk"], "audience": [ISSUERS["clerk"]]}


def test_every_http_api_event_with_a_path_has_its_security_block_in_the_definition(sam: dict[str, Any]) -> None:
    declared = {(method.upper(), path) for path, item in sam["Resources"]["BehestApi"]["Properties"]["DefinitionBody"]
                ["paths"].items() for method in item}
    events = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"])
              for r in sam["Resources"].values() if r["Type"] == "AWS::Serverless::Function"
              for e in r["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi" and "Path" in e["Properties"]}

    assert declared == events == {(r.method, r.path) for r in routes_for(HTTP_API)}


def test_every_identity_variable_the_template_sets_is_a_settings_name(sam: dict[str, Any]) -> None:
    environment = sam["Globals"]["Function"]["Environment"]["Variables"]
    identity = {names.BEHEST_IDENTITY_PROVIDER, names.BEHEST_VERIFY_CALLERS, names.BEHEST_CALLER_ISSUER,
                names.BEHEST_CALLER_AUDIENCE, names.BEHEST_CALLER_JWKS_URL, names.BEHEST_JWKS_CACHE_TTL,
                names.BEHEST_CALLER_COOKIE, names.BEHEST_CALLER_AUTHORIZED_PARTIES, names.BEHEST_ALLOWED_ORIGINS}

    assert identity <= set(environment)
    # The legacy HMAC secret is a field of the key secret, never a variable or parameter.
    assert names.AUTH_JWT_SECRET not in environment
    assert not any(name.startswith("AuthJwtSecret") or name.startswith("AuthHmac") for name in sam["Parameters"])

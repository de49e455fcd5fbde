"""template.yaml, transformed by aws-sam-translator and linted by cfn-lint, offline: what it deploys."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cfnlint.api import lint
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import intrinsics_multi_constructor

from behest_lambda import settings as names
from behest_lambda.errors import NotFoundError
from behest_lambda.routes import (
    HTTP_API,
    RELAY_FUNCTION,
    SERVICE_FUNCTION,
    STREAM_FUNCTION,
    TOKEN_FUNCTION,
    match,
    routes_for,
)
from tests.support import EVENTS, load_event

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
S3_CODE = "s3://bucket/key.zip"

TOKEN_ROUTE = "/api/behest/token"
CHAT_ROUTE = "/v1/chat/completions"
API_GATEWAY_HTTP_LIMIT_S = 30
APP_FUNCTIONS = (TOKEN_FUNCTION, RELAY_FUNCTION, STREAM_FUNCTION, SERVICE_FUNCTION)
# API Gateway's catch-all route, as SAM writes an HttpApi event with neither Path nor Method.
CATCH_ALL = ("ANY", "$default", RELAY_FUNCTION)

SECRET_ARN = {"Fn::If": ["CreateKeySecret", {"Ref": "KeySecret"}, {"Ref": "ExistingKeySecretArn"}]}

SHARED_VARIABLES = {
    "BEHEST_BASE_URL", "BEHEST_KEY_SECRET_ID", "BEHEST_KID", "BEHEST_TENANT_ID", "BEHEST_PROJECT_ID",
    "BEHEST_TTL", "BEHEST_MAX_TTL", "BEHEST_TIER", "BEHEST_TIER_MIN", "BEHEST_TIER_MAX", "BEHEST_USER_CLAIM",
    "BEHEST_TIER_CLAIM", "BEHEST_TIER_MAP", "BEHEST_KEY_CACHE_TTL", "BEHEST_KEY_GRACE_PERIOD", "BEHEST_MINT_TIMEOUT",
    "BEHEST_SECRETS_EXTENSION", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE",
}
RELAY_POLICY_VARIABLES = {
    "BEHEST_UPSTREAM_TIMEOUT", "BEHEST_ALLOWED_MODELS", "BEHEST_MAX_TOKENS", "BEHEST_MAX_N", "BEHEST_MAX_BODY_BYTES",
    "BEHEST_ALLOWED_SERVICE_TIERS",
}
# Older names the code still reads, which the template no longer sets.
SUPERSEDED_VARIABLES = {"LOG_LEVEL", "METRICS_NAMESPACE"}
SERVICE_NAMES = {TOKEN_FUNCTION: "behest-token", RELAY_FUNCTION: "behest-relay", STREAM_FUNCTION: "behest-stream",
                 SERVICE_FUNCTION: "behest-service"}


class _IntrinsicsLoader(yaml.SafeLoader):
    """SafeLoader that reads !Ref, !Sub, !If … as their JSON forms, without touching yaml.SafeLoader itself."""


_IntrinsicsLoader.add_multi_constructor("!", intrinsics_multi_constructor)


def _with_s3_code(sam: dict[str, Any]) -> dict[str, Any]:
    """A copy whose local CodeUris point at S3, as `sam package` would leave them."""
    packaged = copy.deepcopy(sam)
    function_globals = packaged.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = S3_CODE
    for resource in packaged["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = S3_CODE
    return packaged


def _lint_errors(cfn: dict[str, Any]) -> list[str]:
    """cfn-lint's errors (E rules) on a CloudFormation template; warnings and notes are not failures."""
    text = json.dumps(cfn, indent=1)
    matches = lint(text, regions=[REGION])
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches if m.rule.id.startswith("E")]


def load_sam() -> dict[str, Any]:
    """template.yaml as written, intrinsics in their JSON forms."""
    document = yaml.load(TEMPLATE.read_text(), Loader=_IntrinsicsLoader)
    assert isinstance(document, dict)
    return document


def transform(sam: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that aws-sam-translator makes of it, code packaged to S3."""
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    # No managed policy is named by name in the template; an empty map keeps the IAM lookup away.
    transformed: dict[str, Any] = translator.translate(
        _with_s3_code(sam), parameter_values={}, get_managed_policy_map=lambda: {}
    )
    return transformed


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def _app_functions(resources: dict[str, Any]) -> dict[str, Any]:
    """The product's three Lambda functions, without the deploy-time ConfigFingerprintFunction."""
    return {name: resources[name] for name in APP_FUNCTIONS}


def _http_api_events(sam: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(method, path, function) of every HttpApi event in the SAM template, as API Gateway routes them."""
    routes = set()
    for name, resource in _of_type(sam["Resources"], "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            properties = event["Properties"]
            assert properties["ApiId"] == {"Ref": "BehestApi"}, name
            assert properties["PayloadFormatVersion"] == "2.0", name
            routes.add((properties.get("Method", "ANY").upper(), properties.get("Path", "$default"), name))
    return routes


def _parameter_bounds(sam: dict[str, Any], value: Any) -> list[float]:
    """Every value a `{"Ref": parameter}` may take at its edges: its default and its MaxValue."""
    assert isinstance(value, dict) and set(value) == {"Ref"}, f"expected a parameter Ref, got {value!r}"
    parameter = sam["Parameters"][value["Ref"]]
    assert "MaxValue" in parameter, f"{value['Ref']} has no MaxValue: nothing bounds it"
    return [float(parameter["Default"]), float(parameter["MaxValue"])]


def _api_body(resources: dict[str, Any]) -> dict[str, Any]:
    apis = _of_type(resources, "AWS::ApiGatewayV2::Api")
    assert list(apis) == ["BehestApi"]
    body: dict[str, Any] = apis["BehestApi"]["Properties"]["Body"]
    return body


def test_the_transformed_template_lints_without_errors(cfn: dict[str, Any]) -> None:
    assert _lint_errors(cfn) == []


def test_the_lint_check_reports_a_broken_reference(cfn: dict[str, Any]) -> None:
    broken = copy.deepcopy(cfn)
    broken["Resources"]["RelayFunction"]["Properties"]["Role"] = {"Fn::GetAtt": ["NoSuchRole", "Arn"]}

    assert _lint_errors(broken) != []


def test_every_function_ships_the_functions_directory(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    assert sam["Globals"]["Function"]["CodeUri"] == "functions/"
    functions = _of_type(sam["Resources"], "AWS::Serverless::Function")
    assert sorted(functions) == sorted(APP_FUNCTIONS)
    assert all("CodeUri" not in f["Properties"] for f in functions.values())
    assert {r["Properties"]["Code"]["S3Key"] for r in _app_functions(resources).values()} == {"key.zip"}


def test_functions_run_python_3_13_on_arm64_with_their_handlers(resources: dict[str, Any]) -> None:
    handlers = {}
    for name, function in _of_type(resources, "AWS::Lambda::Function").items():
        assert function["Properties"]["Runtime"] == "python3.13", name
        assert function["Properties"]["Architectures"] == ["arm64"], name
        handlers[name] = function["Properties"]["Handler"]

    assert handlers == {
        TOKEN_FUNCTION: "behest_lambda.token_handler.handler",
        RELAY_FUNCTION: "behest_lambda.relay_handler.handler",
        STREAM_FUNCTION: "behest_lambda.stream_handler.handler",
        SERVICE_FUNCTION: "behest_lambda.stream_handler.service_handler",
        "ConfigFingerprintFunction": "index.handler",
    }


def test_the_http_api_serves_exactly_the_route_tables_routes_plus_a_catch_all(sam: dict[str, Any]) -> None:
    table = {(route.method, route.path, route.function) for route in routes_for(HTTP_API)}

    assert _http_api_events(sam) == table | {CATCH_ALL}


def test_the_route_comparison_notices_a_route_missing_from_the_template(sam: dict[str, Any]) -> None:
    trimmed = copy.deepcopy(sam)
    del trimmed["Resources"][RELAY_FUNCTION]["Properties"]["Events"]["ListModels"]
    table = {(route.method, route.path, route.function) for route in routes_for(HTTP_API)}

    assert table - _http_api_events(trimmed) == {("GET", "/v1/models", RELAY_FUNCTION)}


def test_every_http_api_route_has_a_sample_event_as_api_gateway_sends_it() -> None:
    # The Function URL's events also say "$default": only those of the HTTP API count here.
    samples = [event for event in (load_event(path.stem) for path in sorted(EVENTS.glob("*.json")))
               if ".execute-api." in event["requestContext"]["domainName"]]
    by_route_key: dict[str, list[dict[str, Any]]] = {}
    for event in samples:
        by_route_key.setdefault(event["routeKey"], []).append(event)

    for route in routes_for(HTTP_API):
        events = by_route_key.get(f"{route.method} {route.path}", [])
        assert events, f"no sample event in events/ for {route.method} {route.path}"
        for event in events:
            http = event["requestContext"]["http"]
            assert match(http["method"], http["path"]).route == route
            assert event["requestContext"]["routeKey"] == event["routeKey"]

    (unrouted,) = by_route_key["$default"]
    assert "authorizer" not in unrouted["requestContext"], "the catch-all route has no authorizer"
    with pytest.raises(NotFoundError):
        match(unrouted["requestContext"]["http"]["method"], unrouted["requestContext"]["http"]["path"])


def test_table_routes_are_behind_the_jwt_authorizer_and_the_catch_all_is_not(resources: dict[str, Any]) -> None:
    body = _api_body(resources)
    for route in routes_for(HTTP_API):
        operation = body["paths"][route.path][route.method.lower()]
        # The authorizer unless the functions verify (test_template_identity.py resolves it per preset).
        assert operation["security"] == {"Fn::If": ["FunctionVerifies", [{"NONE": []}], [{"UserJwt": []}]]}, route
        integration = operation["x-amazon-apigateway-integration"]
        # The alias, not the bare function: SnapStart only applies to published versions.
        assert f"${{{route.function}Aliaslive}}" in integration["uri"]["Fn::Sub"], route
        assert integration["payloadFormatVersion"] == "2.0", route

    catch_all = body["paths"]["/$default"]["x-amazon-apigateway-any-method"]
    assert catch_all["isDefaultRoute"] is True
    assert catch_all["security"] == [{"NONE": []}]
    assert f"${{{RELAY_FUNCTION}Aliaslive}}" in catch_all["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]

    authorizer = body["components"]["securitySchemes"]["UserJwt"]["x-amazon-apigateway-authorizer"]
    assert authorizer == {
        "type": "jwt",
        "identitySource": "$request.header.Authorization",
        "jwtConfiguration": {"issuer": {"Ref": "AuthJwtIssuer"}, "audience": {
            "Fn::If": ["HasAudience", {"Ref": "AuthJwtAudience"}, [{"Ref": "AuthJwtIssuer"}]]}},
    }


def test_api_gateway_may_invoke_each_alias_on_its_routes_and_the_relay_on_the_catch_all(
    resources: dict[str, Any],
) -> None:
    permissions: dict[str, set[str]] = {}
    for permission in _of_type(resources, "AWS::Lambda::Permission").values():
        properties = permission["Properties"]
        if "SourceArn" in properties:
            permissions.setdefault(properties["FunctionName"]["Ref"], set()).add(properties["SourceArn"]["Fn::Sub"][0])
    stage = "${__ApiId__}/${__Stage__}/"

    def granted(function: str) -> set[str]:
        return {arn.split(stage, 1)[1] for arn in permissions[f"{function}Aliaslive"]}

    assert permissions.keys() == {f"{TOKEN_FUNCTION}Aliaslive", f"{RELAY_FUNCTION}Aliaslive"}
    assert granted(TOKEN_FUNCTION) == {"POST" + TOKEN_ROUTE}
    # API Gateway checks `{model}` against the invoked path, hence the wildcard.
    expected_relay = {r.method + re.sub(r"\{\w+\}", "*", r.path) for r in routes_for(HTTP_API, RELAY_FUNCTION)}
    assert granted(RELAY_FUNCTION) == expected_relay | {"*"}


def test_each_function_may_read_the_key_secret_and_no_other(resources: dict[str, Any]) -> None:
    for function_name in APP_FUNCTIONS:
        role = resources[f"{function_name}Role"]["Properties"]
        # SAM adds the X-Ray write policy whenever Tracing is set, even to PassThrough: write-only.
        assert role["ManagedPolicyArns"] == [
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        ], function_name
        statements = []
        for policy in role["Policies"]:
            if "Fn::If" in policy:
                condition, policy, otherwise = policy["Fn::If"]
                assert (condition, otherwise) == ("HasKeySecretKmsKey", {"Ref": "AWS::NoValue"})
            statements.extend(policy["PolicyDocument"]["Statement"])

        secret_reads = [s for s in statements if any(str(a).startswith("secretsmanager:") for a in _listed(s["Action"]))]
        assert len(secret_reads) == 1, function_name
        assert _listed(secret_reads[0]["Action"]) == ["secretsmanager:GetSecretValue"]
        assert _unwrapped(secret_reads[0]["Resource"]) == SECRET_ARN, function_name

        decrypts = [s for s in statements if "kms:Decrypt" in _listed(s["Action"])]
        assert [s["Resource"] for s in decrypts] == [{"Ref": "KeySecretKmsKeyArn"}], function_name
        assert len(statements) == 2, function_name

        variables = resources[function_name]["Properties"]["Environment"]["Variables"]
        assert variables["BEHEST_KEY_SECRET_ID"] == SECRET_ARN, function_name


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _unwrapped(resource: Any) -> Any:
    """SAM's policy templates wrap the ARN as {"Fn::Sub": ["${secretArn}", {"secretArn": …}]}."""
    if isinstance(resource, dict) and "Fn::Sub" in resource and isinstance(resource["Fn::Sub"], list):
        pattern, values = resource["Fn::Sub"]
        if re.fullmatch(r"\$\{\w+\}", pattern):
            return values[pattern[2:-1]]
    return resource


def test_the_stack_creates_the_key_secret_only_without_an_existing_arn(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    assert cfn["Conditions"]["CreateKeySecret"] == {"Fn::Equals": [{"Ref": "ExistingKeySecretArn"}, ""]}
    assert sam["Parameters"]["ExistingKeySecretArn"]["Default"] == ""
    secret = cfn["Resources"]["KeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Condition"] == "CreateKeySecret"
    assert secret["DeletionPolicy"] == "Retain"
    placeholder = json.loads(secret["Properties"]["SecretString"])
    assert placeholder["BEHEST_KEY"] == "REPLACE_ME"
    assert "Replace the placeholder" in secret["Properties"]["Description"]["Fn::Sub"]


def test_the_relay_gives_up_on_upstream_before_its_function_and_api_gateway_do(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    relay = resources[RELAY_FUNCTION]["Properties"]
    timeout = relay["Timeout"]
    upstream_bounds = _parameter_bounds(sam, relay["Environment"]["Variables"]["BEHEST_UPSTREAM_TIMEOUT"])

    assert timeout <= API_GATEWAY_HTTP_LIMIT_S
    assert all(upstream < timeout for upstream in upstream_bounds), (upstream_bounds, timeout)
    body = _api_body(resources)
    relay_operations = [body["paths"][r.path][r.method.lower()] for r in routes_for(HTTP_API, RELAY_FUNCTION)]
    relay_operations.append(body["paths"]["/$default"]["x-amazon-apigateway-any-method"])
    for operation in relay_operations:
        integration = operation["x-amazon-apigateway-integration"]
        assert timeout * 1000 < integration.get("timeoutInMillis", API_GATEWAY_HTTP_LIMIT_S * 1000) <= 30_000


def test_the_mint_call_gives_up_before_the_token_function_does(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    token = resources["TokenFunction"]["Properties"]
    mint_bounds = _parameter_bounds(sam, token["Environment"]["Variables"]["BEHEST_MINT_TIMEOUT"])

    assert token["Timeout"] <= API_GATEWAY_HTTP_LIMIT_S
    assert all(mint < token["Timeout"] for mint in mint_bounds), (mint_bounds, token["Timeout"])


def test_every_variable_the_code_reads_is_set_and_every_variable_set_is_read(resources: dict[str, Any]) -> None:
    read_by_code = {value for name, value in vars(names).items() if name.isupper() and name == value}
    variables = {
        name: resources[name]["Properties"]["Environment"]["Variables"] for name in APP_FUNCTIONS
    }
    token, relay, stream, service = (set(variables[name]) for name in APP_FUNCTIONS)

    for name, names_set in variables.items():
        assert set(names_set) - read_by_code == set(), name
        assert set(names_set) & SUPERSEDED_VARIABLES == set(), name
        assert names_set["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAMES[name], name
        assert names_set["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}, name
        assert names_set["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}, name
    assert SHARED_VARIABLES <= token
    assert SHARED_VARIABLES | RELAY_POLICY_VARIABLES <= relay
    assert SHARED_VARIABLES | RELAY_POLICY_VARIABLES <= stream
    assert SHARED_VARIABLES | RELAY_POLICY_VARIABLES | {"BEHEST_TRUSTED_ROLE_ARNS"} <= service
    assert token & RELAY_POLICY_VARIABLES == set()


def test_relay_policy_ceilings_apply_by_default_and_are_bounded(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    parameters = sam["Parameters"]
    for function in (RELAY_FUNCTION, STREAM_FUNCTION):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["BEHEST_MAX_TOKENS"] == {"Ref": "BehestMaxTokens"}, function
        assert variables["BEHEST_MAX_N"] == {"Ref": "BehestMaxN"}, function

    assert (parameters["BehestMaxTokens"]["Type"], parameters["BehestMaxTokens"]["Default"]) == ("Number", 4096)
    assert (parameters["BehestMaxTokens"]["MinValue"], parameters["BehestMaxTokens"]["MaxValue"]) == (1, 10_000_000)
    assert (parameters["BehestMaxN"]["Type"], parameters["BehestMaxN"]["Default"]) == ("Number", 4)
    assert (parameters["BehestTierMin"]["Default"], parameters["BehestTierMax"]["Default"]) == (0, 100)
    globals_ = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert (globals_["BEHEST_TIER_MIN"], globals_["BEHEST_TIER_MAX"]) == ({"Ref": "BehestTierMin"}, {"Ref": "BehestTierMax"})


def test_cors_origins_come_from_the_allowed_origins_parameter(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    cors = _api_body(resources)["x-amazon-apigateway-cors"]

    assert sam["Parameters"]["AllowedOrigins"]["Type"] == "CommaDelimitedList"
    assert cors["allowOrigins"] == {"Ref": "AllowedOrigins"}
    assert set(cors["allowHeaders"]) == {"authorization", "content-type", "x-session-id"}
    assert set(cors["allowMethods"]) == {"GET", "POST", "OPTIONS"}
    assert {route.method for route in routes_for(HTTP_API)} <= set(cors["allowMethods"])
    assert set(cors["exposeHeaders"]) == {"x-session-id", "retry-after"}
    assert cors["maxAge"] > 0
    # Credentials (a session cookie) only where a cookie carries the token: test_template_identity.py.
    assert cors["allowCredentials"] == {"Fn::If": ["UsesCookies", True, False]}


def test_every_route_is_throttled_from_parameters_and_access_logged(resources: dict[str, Any]) -> None:
    stages = _of_type(resources, "AWS::ApiGatewayV2::Stage")
    assert len(stages) == 1
    stage = next(iter(stages.values()))["Properties"]

    assert stage["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
    }
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert "$context.requestId" in stage["AccessLogSettings"]["Format"]


def test_each_function_logs_json_to_its_own_log_group_with_the_retention_parameter(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    groups = set()
    for name, function in _app_functions(resources).items():
        logging = function["Properties"]["LoggingConfig"]
        group = logging["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", name
        # JSON, so that Lambda stores Powertools' JSON lines as they are and filters them by level.
        assert logging["LogFormat"] == "JSON", name
        assert logging["ApplicationLogLevel"] == {"Fn::FindInMap": ["LambdaLogLevels", {"Ref": "LogLevel"}, "Application"]}
        assert logging["SystemLogLevel"] == "INFO", name
        groups.add(group)
    groups.add("ApiAccessLogGroup")

    assert groups == {"TokenLogGroup", "RelayLogGroup", "StreamLogGroup", "ServiceLogGroup", "ApiAccessLogGroup"}
    for group in groups:
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}, group
    assert sam["Parameters"]["LogRetentionInDays"]["Default"] == 30


def test_every_log_level_maps_to_a_level_lambda_accepts(sam: dict[str, Any]) -> None:
    lambda_levels = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
    mapping = sam["Mappings"]["LambdaLogLevels"]

    assert set(mapping) == set(sam["Parameters"]["LogLevel"]["AllowedValues"])
    assert {row["Application"] for row in mapping.values()} <= lambda_levels
    assert mapping["WARNING"] == {"Application": "WARN"}


def test_outputs_give_the_urls_secret_and_functions_a_client_needs(cfn: dict[str, Any]) -> None:
    outputs = {name: output["Value"] for name, output in cfn["Outputs"].items()}
    api_url = outputs["ApiUrl"]["Fn::Sub"]
    base_path = outputs["OpenAIBaseUrl"]["Fn::Sub"].removeprefix(api_url)

    assert outputs.keys() >= {
        "ApiUrl", "TokenEndpoint", "OpenAIBaseUrl", "StreamBaseUrl", "KeySecretArn", "SecretsReadPath",
        "TokenFunctionName", "TokenFunctionArn", "RelayFunctionName", "RelayFunctionArn", "StreamFunctionName",
        "DashboardUrl",
    }
    assert api_url.startswith("https://${BehestApi}.execute-api.")
    assert outputs["TokenEndpoint"] == {"Fn::Sub": api_url + TOKEN_ROUTE}
    assert base_path == "/v1"
    # An OpenAI SDK appends /chat/completions, /models … to its base_url.
    assert all(r.path.startswith(base_path + "/") for r in routes_for(HTTP_API, RELAY_FUNCTION))
    assert outputs["StreamBaseUrl"] == {"Fn::Sub": "${StreamFunctionUrl.FunctionUrl}v1"}
    assert outputs["KeySecretArn"] == SECRET_ARN
    assert outputs["TokenFunctionArn"] == {"Fn::GetAtt": [TOKEN_FUNCTION, "Arn"]}
    assert outputs["RelayFunctionArn"] == {"Fn::GetAtt": [RELAY_FUNCTION, "Arn"]}


def test_every_parameter_is_described_and_its_default_is_allowed(sam: dict[str, Any]) -> None:
    for name, parameter in sam["Parameters"].items():
        assert parameter.get("Description", "").strip(), f"{name} has no Description"
        if "Default" not in parameter:
            continue
        default = parameter["Default"]
        if "AllowedPattern" in parameter:
            assert re.fullmatch(parameter["AllowedPattern"], str(default)), name
        if "AllowedValues" in parameter:
            assert default in parameter["AllowedValues"], name
        if "MinValue" in parameter:
            assert float(parameter["MinValue"]) <= float(default), name
        if "MaxValue" in parameter:
            assert float(default) <= float(parameter["MaxValue"]), name


def test_every_parameter_appears_in_the_console_groups(sam: dict[str, Any]) -> None:
    groups = sam["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]

    assert sorted(grouped) == sorted(sam["Parameters"])


def test_the_streaming_function_is_a_public_streaming_function_url_that_checks_tokens_itself(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    url = _of_type(resources, "AWS::Lambda::Url")
    config = url[STREAM_FUNCTION + "Url"]["Properties"]
    assert (config["AuthType"], config["InvokeMode"]) == ("NONE", "RESPONSE_STREAM")
    assert config["TargetFunctionArn"] == {"Ref": STREAM_FUNCTION}
    assert config["Cors"]["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    assert set(config["Cors"]["AllowMethods"]) == {route.method for route in routes_for("function_url")}

    public = [p["Properties"] for p in _of_type(resources, "AWS::Lambda::Permission").values()
              if p["Properties"]["Principal"] == "*"]
    assert public and all(p["FunctionName"] == {"Ref": STREAM_FUNCTION} for p in public)

    stream = sam["Resources"][STREAM_FUNCTION]["Properties"]
    env = {**sam["Globals"]["Function"]["Environment"]["Variables"], **stream["Environment"]["Variables"]}
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/stream-bootstrap"
    assert env["BEHEST_CALLER_ISSUER"] == {"Ref": "AuthJwtIssuer"}
    assert env["BEHEST_CALLER_AUDIENCE"] == {"Fn::Join": [",", {"Ref": "AuthJwtAudience"}]}
    assert stream["Timeout"] > sam["Parameters"]["BehestStreamUpstreamTimeout"]["MaxValue"]
    assert (TEMPLATE.parent / "functions" / "stream-bootstrap").stat().st_mode & 0o111, "the wrapper must be executable"

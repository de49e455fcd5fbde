"""template.yaml, the operator's side: the extension layer by region, the switches, and the queries, alarms and dashboard."""

from __future__ import annotations

import json
import re
import sys
import types
from typing import Any

import pytest

from behest_lambda.routes import (
    FUNCTION_URL,
    HTTP_API,
    RELAY_FUNCTION,
    SERVICE_FUNCTION,
    SERVICE_URL,
    STREAM_FUNCTION,
    TOKEN_FUNCTION,
    routes_for,
)
from tests.unit.test_template import APP_FUNCTIONS, SERVICE_NAMES, _of_type

LAYER_ARN = re.compile(
    r"arn:aws:lambda:(?P<region>[a-z]{2}-[a-z]+-\d):(?P<account>\d{12}):"
    r"layer:AWS-Parameters-and-Secrets-Lambda-Extension-Arm64:(?P<version>[1-9]\d*)"
)
NOT_IN_TABLE = "ap-northeast-3"  # a commercial region AWS's table gives no arm64 layer for

# The dimension sets the functions emit each metric with (EMF dimension sets are matched exactly).
DIMENSIONS = {
    "TokenMinted": {"service"},
    "Relayed": {"service"},
    "RequestRefused": {"service", "code"},
    "KeyRefreshFailed": {"service", "reason"},
    "Requests": {"service", "route", "model"},
    "InputTokens": {"service", "route", "model"},
    "OutputTokens": {"service", "route", "model"},
    "UpstreamErrors": {"service", "route"},
    "UpstreamAuthFailed": {"service"},
}
USAGE_FIELDS = {
    "user_id", "caller", "session_id", "tier", "route", "model_requested", "model", "input_tokens", "output_tokens",
    "cached_tokens", "reasoning_tokens", "status", "first_byte_ms", "duration_ms", "streamed",
}
REFUSAL_FIELDS = {"status", "code"}
QUERY_WORDS = {"filter", "stats", "by", "as", "sort", "desc", "asc", "limit", "fields", "and", "or", "message"}
QUERIES = ("TopUsersByTokensQuery", "TokensByModelPerHourQuery", "RefusalsByCodeQuery", "SlowestFirstBytesQuery")


class _Stack:
    """Evaluates the template's conditions and values for one region and set of parameter values."""

    def __init__(self, template: dict[str, Any], region: str, **parameters: Any) -> None:
        self.template = template
        self.values = {name: p.get("Default") for name, p in template["Parameters"].items()}
        self.values.update(parameters)
        self.values["AWS::Region"] = region

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(n) for n in node]
        if not isinstance(node, dict):
            return node
        intrinsic = len(node) == 1 and next(iter(node)) in ("Ref", "Condition") or next(iter(node), "").startswith("Fn::")
        if not intrinsic:
            return {key: self.value(n) for key, n in node.items()}
        (kind, argument), = node.items()
        if kind == "Ref":
            # AWS::NoValue and resources stay as written.
            return self.values.get(argument, node)
        if kind == "Condition":
            return self.condition(argument)
        if kind == "Fn::Equals":
            left, right = (str(self.value(a)) for a in argument)
            return left == right
        if kind == "Fn::Or":
            assert 2 <= len(argument) <= 10, "Fn::Or takes 2 to 10 conditions"
            return any(self.value(a) for a in argument)
        if kind == "Fn::And":
            assert 2 <= len(argument) <= 10, "Fn::And takes 2 to 10 conditions"
            return all(self.value(a) for a in argument)
        if kind == "Fn::Not":
            return not self.value(argument[0])
        if kind == "Fn::If":
            name, then, otherwise = argument
            return self.value(then if self.condition(name) else otherwise)
        if kind == "Fn::Join":
            separator, parts = argument
            return separator.join(str(part) for part in self.value(parts))
        if kind == "Fn::Split":
            separator, text = argument
            return str(self.value(text)).split(separator)
        if kind == "Fn::Select":
            index, items = argument
            return self.value(items)[int(index)]
        if kind == "Fn::FindInMap":
            table, key, column = (self.value(a) for a in argument)
            return self.template["Mappings"][table][key][column]  # a missing key fails the deploy, as here
        return node


def _equals_regions(node: Any) -> set[str]:
    """Every region an Fn::Or tree of Fn::Equals [AWS::Region, …] names."""
    (kind, argument), = node.items()
    if kind == "Fn::Or":
        return set().union(*(_equals_regions(a) for a in argument))
    assert kind == "Fn::Equals" and argument[0] == {"Ref": "AWS::Region"}, node
    return {argument[1]}


def test_every_extension_layer_arn_is_a_versioned_arm64_layer_of_its_own_region(sam: dict[str, Any]) -> None:
    table = sam["Mappings"]["SecretsExtensionLayers"]
    assert len(table) >= 20

    for region, row in table.items():
        found = LAYER_ARN.fullmatch(row["Arm64"])
        assert found, row["Arm64"]
        assert found["region"] == region
        assert len(found["account"]) == 12


def test_the_arn_check_refuses_an_x86_layer_and_an_unversioned_one() -> None:
    x86 = "arn:aws:lambda:us-east-1:177933569100:layer:AWS-Parameters-and-Secrets-Lambda-Extension:4"
    unversioned = "arn:aws:lambda:us-east-1:177933569100:layer:AWS-Parameters-and-Secrets-Lambda-Extension-Arm64"

    assert LAYER_ARN.fullmatch(x86) is None
    assert LAYER_ARN.fullmatch(unversioned) is None


def test_the_condition_guarding_the_lookup_names_exactly_the_regions_of_the_table(sam: dict[str, Any]) -> None:
    guarded = _equals_regions(sam["Conditions"]["ExtensionPublishedInRegion"])

    assert guarded == set(sam["Mappings"]["SecretsExtensionLayers"])
    assert NOT_IN_TABLE not in guarded


def test_a_region_of_the_table_gets_its_layer_and_reads_through_the_extension(sam: dict[str, Any]) -> None:
    stack = _Stack(sam, "eu-west-1")
    function_globals = sam["Globals"]["Function"]

    assert stack.value(function_globals["Layers"]) == [sam["Mappings"]["SecretsExtensionLayers"]["eu-west-1"]["Arm64"]]
    assert stack.value(function_globals["Environment"]["Variables"]["BEHEST_SECRETS_EXTENSION"]) == "on"
    assert "Parameters and Secrets extension" in str(stack.value(sam["Outputs"]["SecretsReadPath"]["Value"]))


def test_a_region_missing_from_the_table_deploys_without_a_layer_and_says_boto3(sam: dict[str, Any]) -> None:
    stack = _Stack(sam, NOT_IN_TABLE)
    function_globals = sam["Globals"]["Function"]

    assert stack.value(function_globals["Layers"]) == {"Ref": "AWS::NoValue"}
    assert stack.value(function_globals["Environment"]["Variables"]["BEHEST_SECRETS_EXTENSION"]) == "off"
    assert "boto3" in str(stack.value(sam["Outputs"]["SecretsReadPath"]["Value"]))


def test_the_layer_parameter_overrides_the_table_in_any_region(sam: dict[str, Any]) -> None:
    own = "arn:aws:lambda:ap-northeast-3:123456789012:layer:AWS-Parameters-and-Secrets-Lambda-Extension-Arm64:9"
    function_globals = sam["Globals"]["Function"]
    for region in ("us-east-1", NOT_IN_TABLE):
        stack = _Stack(sam, region, SecretsExtensionLayerArn=own)
        assert stack.value(function_globals["Layers"]) == [own], region
        assert stack.value(function_globals["Environment"]["Variables"]["BEHEST_SECRETS_EXTENSION"]) == "on", region


def test_every_function_gets_the_same_layer_choice(resources: dict[str, Any], sam: dict[str, Any]) -> None:
    for name in APP_FUNCTIONS:
        properties = resources[name]["Properties"]
        assert properties["Layers"] == sam["Globals"]["Function"]["Layers"], name
        assert properties["Environment"]["Variables"]["BEHEST_SECRETS_EXTENSION"] == {
            "Fn::If": ["UseSecretsExtension", "on", "off"]
        }, name


def test_snapstart_is_off_by_default_on_the_buffered_functions_and_never_on_the_streaming_one(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    for name in (TOKEN_FUNCTION, RELAY_FUNCTION):
        snap_start = resources[name]["Properties"]["SnapStart"]
        assert _Stack(sam, "us-east-1").value(snap_start) == {"ApplyOn": "None"}, name
        assert _Stack(sam, "us-east-1", EnableSnapStart="true").value(snap_start) == {"ApplyOn": "PublishedVersions"}
        alias = resources[f"{name}Aliaslive"]["Properties"]
        assert alias["FunctionName"] == {"Ref": name}
    assert "SnapStart" not in resources[STREAM_FUNCTION]["Properties"]
    assert "AutoPublishAlias" not in sam["Resources"][STREAM_FUNCTION]["Properties"]


def test_a_parameter_change_publishes_a_new_version_through_the_fingerprint(
    sam: dict[str, Any], cfn: dict[str, Any], resources: dict[str, Any]
) -> None:
    fingerprinted = set(resources["ConfigFingerprint"]["Properties"]) - {"ServiceToken"}
    for name in (TOKEN_FUNCTION, RELAY_FUNCTION):
        versions = [r for r in _of_type(resources, "AWS::Lambda::Version").values()
                    if r["Properties"]["FunctionName"] == {"Ref": name}]
        assert len(versions) == 1, name
        # A new description replaces the version (Description is create-only): Lambda publishes anew.
        assert versions[0]["Properties"]["Description"] == {
            "Fn::Sub": "configuration ${ConfigFingerprint.Fingerprint}"
        }, name
        read = _parameters_read(resources[name]["Properties"], cfn) - {"KeySecretKmsKeyArn"}
        assert read - fingerprinted == set(), name
    for parameter in fingerprinted:
        assert resources["ConfigFingerprint"]["Properties"][parameter] == {"Ref": parameter}


def _parameters_read(node: Any, cfn: dict[str, Any]) -> set[str]:
    """Template parameters a value depends on, through the conditions it uses."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _parameters_read(item, cfn)
    elif isinstance(node, dict):
        for kind, argument in node.items():
            if kind == "Ref" and argument in cfn["Parameters"]:
                found.add(argument)
            elif kind == "Fn::If":
                found |= _parameters_read(cfn["Conditions"][argument[0]], cfn) | _parameters_read(argument[1:], cfn)
            elif kind == "Condition":
                found |= _parameters_read(cfn["Conditions"][argument], cfn)
            else:
                found |= _parameters_read(argument, cfn)
    return found


def _fingerprint_handler(sam: dict[str, Any], sent: list[tuple[str, dict[str, Any], str]]) -> Any:
    """The inline fingerprint function, run with a cfnresponse stand-in that records what it sends."""
    cfnresponse = types.ModuleType("cfnresponse")
    cfnresponse.SUCCESS, cfnresponse.FAILED = "SUCCESS", "FAILED"  # type: ignore[attr-defined]

    def send(event: Any, context: Any, status: str, data: dict[str, Any], physical_id: Any = None,
             reason: Any = None) -> None:
        sent.append((status, data, physical_id or reason))

    cfnresponse.send = send  # type: ignore[attr-defined]
    namespace: dict[str, Any] = {}
    code = sam["Resources"]["ConfigFingerprintFunction"]["Properties"]["Code"]["ZipFile"]
    saved = sys.modules.get("cfnresponse")
    sys.modules["cfnresponse"] = cfnresponse
    try:
        exec(compile(code, "index.py", "exec"), namespace)  # noqa: S102 - the template's own inline code
    finally:
        if saved is None:
            del sys.modules["cfnresponse"]
        else:
            sys.modules["cfnresponse"] = saved
    return namespace["handler"]


def test_the_fingerprint_follows_every_value_and_never_leaves_the_stack_waiting(sam: dict[str, Any]) -> None:
    sent: list[tuple[str, dict[str, Any], str]] = []
    handler = _fingerprint_handler(sam, sent)

    handler({"RequestType": "Create", "ResourceProperties": {"ServiceToken": "arn", "BehestMaxN": "4"}}, None)
    handler({"RequestType": "Update", "ResourceProperties": {"ServiceToken": "arn", "BehestMaxN": "5"}}, None)
    handler({"RequestType": "Delete", "ResourceProperties": {"ServiceToken": "other", "BehestMaxN": "5"}}, None)
    handler({"RequestType": "Delete"}, None)

    (created, first, _), (updated, second, _), (deleted, third, _), (broken, _, reason) = sent
    assert (created, updated, deleted, broken) == ("SUCCESS", "SUCCESS", "SUCCESS", "FAILED")
    assert first["Fingerprint"] != second["Fingerprint"]
    assert second["Fingerprint"] == third["Fingerprint"], "the service token is not configuration"
    assert "ResourceProperties" in reason


def test_active_tracing_is_off_by_default_and_needs_no_sdk(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    for name in APP_FUNCTIONS:
        tracing = resources[name]["Properties"]["TracingConfig"]
        assert _Stack(sam, "us-east-1").value(tracing) == {"Mode": "PassThrough"}, name
        assert _Stack(sam, "us-east-1", EnableActiveTracing="true").value(tracing) == {"Mode": "Active"}, name


def test_the_streaming_function_reserves_concurrency_unless_told_not_to(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    reserved = resources[STREAM_FUNCTION]["Properties"]["ReservedConcurrentExecutions"]

    assert _Stack(sam, "us-east-1").value(reserved) == 50
    assert _Stack(sam, "us-east-1", StreamReservedConcurrency=0).value(reserved) == {"Ref": "AWS::NoValue"}
    for name in (TOKEN_FUNCTION, RELAY_FUNCTION):
        assert "ReservedConcurrentExecutions" not in resources[name]["Properties"], name


def _query_identifiers(query: str) -> set[str]:
    """Field names a Logs Insights query reads: not its words, strings, functions, @fields or aliases."""
    bare = re.sub(r'"[^"]*"|@\w+', " ", query)
    aliases = set(re.findall(r"\bas\s+([a-z_]+)", bare))
    names = set(re.findall(r"\b([a-z][a-z_]*)\b(?!\s*\()", bare))
    return names - QUERY_WORDS - aliases


def test_saved_queries_read_the_usage_and_refusal_records_of_every_function(resources: dict[str, Any]) -> None:
    queries = _of_type(resources, "AWS::Logs::QueryDefinition")
    assert sorted(queries) == sorted((*QUERIES, "SpendByCallerQuery"))
    always = [{"Ref": "TokenLogGroup"}, {"Ref": "RelayLogGroup"}, {"Ref": "StreamLogGroup"}]

    for name, query in queries.items():
        properties = query["Properties"]
        if name == "SpendByCallerQuery":  # the server-to-server URL's alone, deployed with it
            assert (query["Condition"], properties["LogGroupNames"]) == ("HasTrustedServiceRoles",
                                                                         [{"Ref": "ServiceLogGroup"}])
        else:
            assert properties["LogGroupNames"] == {"Fn::If": ["HasTrustedServiceRoles",
                                                              [*always, {"Ref": "ServiceLogGroup"}], always]}, name
        text = properties["QueryString"]
        if name == "RefusalsByCodeQuery":
            assert text.startswith('filter message = "request refused"'), name
            assert _query_identifiers(text) == REFUSAL_FIELDS
        else:
            assert text.startswith('filter message = "usage"'), name
            assert _query_identifiers(text) <= USAGE_FIELDS, name


def test_the_query_check_notices_a_misspelt_field() -> None:
    assert _query_identifiers('filter message = "usage" | stats sum(output_token) as out by model') == {
        "output_token", "model"
    }


def _alarms(resources: dict[str, Any]) -> dict[str, Any]:
    return {name: r["Properties"] for name, r in _of_type(resources, "AWS::CloudWatch::Alarm").items()}


def test_each_function_has_an_errors_and_a_throttles_alarm(resources: dict[str, Any]) -> None:
    watched = {
        (a["MetricName"], a["Dimensions"][0]["Value"]["Ref"])
        for a in _alarms(resources).values() if a.get("Namespace") == "AWS/Lambda"
    }

    assert watched == {(metric, name) for metric in ("Errors", "Throttles") for name in APP_FUNCTIONS}


def test_the_api_5xx_alarm_watches_the_http_api(resources: dict[str, Any]) -> None:
    api = [a for a in _alarms(resources).values() if a.get("Namespace") == "AWS/ApiGateway"]

    assert [(a["MetricName"], a["Dimensions"]) for a in api] == [("5xx", [{"Name": "ApiId", "Value": {"Ref": "BehestApi"}}])]


def test_every_alarm_notifies_the_optional_topic_both_ways(sam: dict[str, Any], resources: dict[str, Any]) -> None:
    alarms = _alarms(resources)
    assert len(alarms) == 15
    assert sam["Parameters"]["AlarmTopicArn"]["Default"] == ""
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}

    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == topic, name
        assert alarm["OKActions"] == topic, name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["AlarmDescription"], name


def _metric_stats(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["Id"]: q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q}


def _dimensions(metric: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in metric["Dimensions"]}


def test_the_signing_key_alarm_sums_refusals_for_an_unavailable_key_from_every_service(
    resources: dict[str, Any],
) -> None:
    alarm = _alarms(resources)["SigningKeyUnavailableAlarm"]
    metrics = _metric_stats(alarm)

    assert {_dimensions(m)["service"] for m in metrics.values()} == set(SERVICE_NAMES.values())
    for metric in metrics.values():
        assert metric["MetricName"] == "RequestRefused"
        assert _dimensions(metric)["code"] == "signing_key_unavailable"
    returned = [q for q in alarm["Metrics"] if q["ReturnData"]]
    assert len(returned) == 1 and all(f"FILL({i}, 0)" in returned[0]["Expression"] for i in metrics)


def test_behest_refusing_our_own_tokens_fires_an_alarm_at_the_first_refusal(resources: dict[str, Any]) -> None:
    alarm = _alarms(resources)["UpstreamAuthFailedAlarm"]
    [query] = alarm["Metrics"]

    assert "SUM(UpstreamAuthFailed)" in query["Expression"]["Fn::Sub"]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_the_key_refresh_alarm_counts_every_failure_reason(resources: dict[str, Any]) -> None:
    alarm = _alarms(resources)["KeyRefreshFailingAlarm"]
    (query,) = alarm["Metrics"]

    assert query["ReturnData"] is True
    assert query["Expression"] == {
        "Fn::Sub": 'SELECT SUM(KeyRefreshFailed) FROM SCHEMA("${MetricsNamespace}", reason, service)'
    }


@pytest.mark.parametrize(("alarm_name", "function", "front"), [
    ("RelayUpstreamErrorRateAlarm", RELAY_FUNCTION, HTTP_API),
    ("StreamUpstreamErrorRateAlarm", STREAM_FUNCTION, FUNCTION_URL),
    ("ServiceUpstreamErrorRateAlarm", SERVICE_FUNCTION, SERVICE_URL),
])
def test_the_upstream_error_rate_alarm_covers_every_route_its_function_serves(
    resources: dict[str, Any], alarm_name: str, function: str, front: str
) -> None:
    alarm = _alarms(resources)[alarm_name]
    metrics = _metric_stats(alarm)
    routes = routes_for(front, RELAY_FUNCTION) if front == HTTP_API else routes_for(front)
    routes = tuple(r for r in routes if r.core != "token")  # the mint has no upstream error rate of its own

    errors = {_dimensions(m)["route"] for m in metrics.values() if m["MetricName"] == "UpstreamErrors"}
    assert errors == {route.core for route in routes}
    assert {_dimensions(m)["service"] for m in metrics.values()} == {SERVICE_NAMES[function]}
    assert sum(m["MetricName"] == "Relayed" for m in metrics.values()) == 1
    assert alarm["Threshold"] == {"Ref": "UpstreamErrorRatePercent"}


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [s for value in values for s in _strings(value)]


def test_every_metric_is_read_with_the_dimension_set_it_is_emitted_with(
    sam: dict[str, Any], resources: dict[str, Any]
) -> None:
    schema = re.compile(r'SELECT SUM\((\w+)\) FROM SCHEMA\(\\?"\$\{MetricsNamespace\}\\?", ([\w, ]+)\)')
    read: list[tuple[str, set[str], str]] = []
    for alarm in _alarms(resources).values():
        for metric in _metric_stats(alarm).values():
            if metric["Namespace"] == {"Ref": "MetricsNamespace"}:
                dimensions = _dimensions(metric)
                read.append((metric["MetricName"], set(dimensions), dimensions["service"]))
    for text in _strings(sam["Resources"]):
        read.extend((name, set(dimensions.replace(" ", "").split(",")), "") for name, dimensions in schema.findall(text))
    for widget in _dashboard(resources)["widgets"]:
        for line in widget["properties"].get("metrics", []):
            if line[0] == "${MetricsNamespace}":
                dimensions = dict(zip(line[2:-1:2], line[3:-1:2], strict=True))
                read.append((line[1], set(dimensions), dimensions["service"]))

    assert len(read) >= 25
    for name, dimensions, service in read:
        assert dimensions == DIMENSIONS[name], name
        assert service in {"", *SERVICE_NAMES.values()}, name


def _dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    (dashboard,) = _of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body: dict[str, Any] = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"])
    return body


def test_the_dashboard_shows_every_alarm_and_runs_the_saved_queries(resources: dict[str, Any]) -> None:
    widgets = _dashboard(resources)["widgets"]
    (alarm_widget,) = [w for w in widgets if w["type"] == "alarm"]
    # The server-to-server function's alarms exist only with TrustedServiceRoleArns: a dashboard body cannot name them.
    always = [name for name in _alarms(resources) if "Condition" not in resources[name]]
    assert always == [name for name in _alarms(resources) if not name.startswith("Service")]
    assert alarm_widget["properties"]["alarms"] == [f"${{{name}.Arn}}" for name in always]

    sources = " | ".join(f"SOURCE '/aws/lambda/${{AWS::StackName}}/{group}'" for group in ("token", "relay", "stream"))
    logs = [w["properties"]["query"] for w in widgets if w["type"] == "log"]
    saved = [resources[name]["Properties"]["QueryString"] for name in QUERIES]
    assert logs == [f"{sources} | {query}" for query in saved]
    for group in ("token", "relay", "stream"):
        assert resources[f"{group.capitalize()}LogGroup"]["Properties"]["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}/{group}"
        }


def test_the_dashboard_widgets_fit_its_grid(resources: dict[str, Any]) -> None:
    for widget in _dashboard(resources)["widgets"]:
        assert 0 <= widget["x"] and widget["x"] + widget["width"] <= 24, widget["properties"].get("title")
        assert widget["height"] > 0

"""Cold mint: a fresh process that imports the token handler and serves one mint, as a deployment runs it.

Three ways the key reaches the function — the key secret through the Parameters and Secrets
extension (the template's default; a stand-in answers on loopback), the key secret through boto3
(the fallback; moto's server on loopback), the key in the environment — each against the
quickstart stack (FastAPI + Mangum + behest-ai) doing the same job, and a bare interpreter. Every
process runs as Lambda runs it: PYTHONDONTWRITEBYTECODE, the package built by functions/build.py
(dependencies and our package, compiled, as `sam build` now ships it), the template's variables;
the same again as SAM's own Python build shipped it before (no bytecode). The quickstart runs from
its own virtualenv, bytecode compiled: its best case. Variants interleaved so machine noise lands
alike; figures are medians.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.deployed import PRINT_SERVED, ROOT, build_tree, lambda_env, template_env, tenant_pem, until_served
from benchmarks.key_secret import ExtensionStandIn, MotoSecretsManager, secret_document

QUICKSTART_PYTHON = ROOT / ".venv" / "quickstart" / "bin" / "python"
QUICKSTART_REQUIREMENTS = ROOT / "benchmarks" / "requirements-quickstart.txt"
QUICKSTART_APP = ROOT / "benchmarks" / "quickstart_app.py"
EVENT = ROOT / "events" / "token_mint.json"

SERVE_ONE = """
import json
{prelude}
from {module} import handler
class Context:
    function_name = "behest-token"
    function_version = "1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:behest-token:live"
    memory_limit_in_mb = 512
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/behest-token"
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 10000
event = json.load(open({event!r}))
response = handler(event, Context())
assert response["statusCode"] == 200, response
assert json.loads(response["body"])["token"].count(".") == 2
import sys
sys.stdout.write("served\\n")
sys.stdout.flush()
"""

BARE = "bare interpreter"
QUICKSTART = "quickstart (FastAPI+Mangum+behest-ai), key in env, its venv"
# (label, short name) of the ways the key reaches our function.
KEY_PATHS = {
    "extension": "key secret via extension (template default)",
    "boto3": "key secret via boto3 (fallback, moto)",
    "env": "key in environment (BEHEST_KEY)",
}
SOURCES_ONLY = " [sources only]"


def ensure_quickstart_env() -> Path:
    """The comparison stack lives in its own venv, installed on first use."""
    if not QUICKSTART_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUICKSTART_PYTHON.parent.parent)], check=True)
        subprocess.run(
            [str(QUICKSTART_PYTHON), "-m", "pip", "install", "-q", "-r", str(QUICKSTART_REQUIREMENTS)], check=True
        )
    return QUICKSTART_PYTHON


def serve_one(module: str, prelude: str = "") -> str:
    return SERVE_ONE.format(prelude=prelude, module=module, event=str(EVENT))


def key_envs(extension: ExtensionStandIn, moto: MotoSecretsManager) -> dict[str, dict[str, str]]:
    """The variables that differ between the three key paths (on top of the template's)."""
    pem = tenant_pem()
    return {
        "extension": {"BEHEST_KEY_SECRET_ID": moto.secret_arn, "BEHEST_SECRETS_EXTENSION": "on",
                      "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port)},
        "boto3": {"BEHEST_KEY_SECRET_ID": moto.secret_arn, "BEHEST_SECRETS_EXTENSION": "off",
                  "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url},
        "env": {"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": "sk_bench", "BEHEST_TENANT_ID": "tenant-bench",
                "BEHEST_PROJECT_ID": "project-bench"},
    }


Command = tuple[list[str], dict[str, str], Path]


def run(rounds: int = 15, warmup: int = 2) -> dict[str, float]:
    """Median wall time (ms) of each variant from spawn until it has served the mint (its exit not counted)."""
    quickstart = ensure_quickstart_env()
    secret = secret_document(tenant_pem())
    with ExitStack() as stack:
        shipped = stack.enter_context(build_tree())
        sources_only = stack.enter_context(build_tree(compiled=False))
        quickstart_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="behest-quickstart-")))
        shutil.copy(QUICKSTART_APP, quickstart_root)
        moto = stack.enter_context(MotoSecretsManager(secret))
        extension = stack.enter_context(ExtensionStandIn(secret, moto.secret_arn))
        envs = key_envs(extension, moto)
        handler = serve_one("behest_lambda.token_handler")
        commands: dict[str, Command] = {BARE: ([sys.executable, "-c", PRINT_SERVED], lambda_env(shipped, "bare"),
                                                shipped)}
        for tree, suffix in ((shipped, ""), (sources_only, SOURCES_ONLY)):
            for path, label in KEY_PATHS.items():
                env = lambda_env(tree, "behest-token", **{**template_env("behest-token"), **envs[path]})
                commands[label + suffix] = ([sys.executable, "-c", handler], env, tree)
        commands[QUICKSTART] = ([str(quickstart), "-c", serve_one("quickstart_app")],
                                lambda_env(quickstart_root, "quickstart", **envs["env"]), quickstart_root)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for round_number in range(warmup + rounds):
            for name, (argv, env, cwd) in commands.items():
                elapsed = until_served(argv, env, cwd)
                if round_number >= warmup:
                    samples[name].append(elapsed)
        assert extension.calls >= rounds, "the extension path never asked the extension stand-in"
        profile = import_profile(*commands[KEY_PATHS["extension"]])
    medians: dict[str, Any] = {name: statistics.median(values) for name, values in samples.items()}
    medians["import profile"] = profile
    return medians


def import_profile(argv: list[str], env: dict[str, str], cwd: Path, runs: int = 3) -> dict[str, float]:
    """ms of import self time per package (stdlib counted under the package that pulled it in), median of runs."""
    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        result = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd, check=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        per_run.append(by_package(result.stderr))
    names = {name for totals in per_run for name in totals}
    return {name: statistics.median(totals.get(name, 0.0) for totals in per_run) for name in names}


def by_package(importtime: str) -> dict[str, float]:
    """Self import time (ms) per top-level package from `-X importtime` output."""
    rows: list[tuple[int, str, int]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = (part for part in line[len("import time:"):].split("|"))
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((depth, name.strip(), int(self_us)))
    totals: dict[str, float] = {}
    ancestors: list[str] = []
    # importtime prints a module after what it imported: read backwards, parents come first.
    for depth, name, self_us in reversed(rows):
        del ancestors[depth:]
        ancestors.append(name)
        owner = next((top for top in (n.split(".")[0] for n in reversed(ancestors))
                      if top not in sys.stdlib_module_names), "stdlib (start-up, json, …)")
        totals[owner] = totals.get(owner, 0.0) + self_us / 1000
    return totals


def report(medians: dict[str, Any]) -> list[str]:
    bare = medians[BARE]
    lines = ["Cold mint: fresh process, import the token handler, serve one local-sign mint, as deployed (median ms)",
             "  PYTHONDONTWRITEBYTECODE=1, functions/build.py's package (compiled), template variables, Lambda's env;",
             f"  {SOURCES_ONLY.strip()}: the same files without bytecode, as SAM's own Python build shipped them"]
    for name, value in medians.items():
        if name == "import profile":
            continue
        lines.append(f"  {name:<62} {value:8.1f} ms   (+{value - bare:6.1f} over bare)")
    lines.append(f"  {'vs the quickstart stack':<62} {'whole':>8}   {'above bare':>10}")
    for path, label in KEY_PATHS.items():
        for suffix in ("", SOURCES_ONLY):
            whole, above = ratios(medians, label + suffix)
            target = {"extension": "target <= 0.15x, aim 0.10x", "boto3": "report; <= 0.35x"}.get(path, "")
            lines.append(f"  {label + suffix:<62} {whole:7.3f}x   {above:9.3f}x   {target if not suffix else ''}")
    lines.append("  what shipping bytecode (functions/build.py) saves over sources only:")
    for label in KEY_PATHS.values():
        saving = medians[label + SOURCES_ONLY] - medians[label]
        lines.append(f"    {label:<60} {saving:6.1f} ms")
    profile: dict[str, float] = medians["import profile"]
    lines.append("  where the import time goes, key secret via extension (-X importtime self ms, median of 3;")
    lines.append("  stdlib modules counted under the package that imported them first):")
    for name, ms in sorted(profile.items(), key=lambda item: -item[1])[:12]:
        lines.append(f"    {name:<40} {ms:7.1f} ms")
    lines.append(f"    {'total':<40} {sum(profile.values()):7.1f} ms   (importtime's own overhead inflates these)")
    return lines


def ratios(medians: dict[str, Any], name: str) -> tuple[float, float]:
    """(whole process, above a bare interpreter) of a variant against the quickstart stack."""
    bare, quickstart = medians[BARE], medians[QUICKSTART]
    return medians[name] / quickstart, (medians[name] - bare) / (quickstart - bare)


def rows(medians: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """README table rows: (configuration, figure, ratio, target)."""
    bare, quickstart = medians[BARE], medians[QUICKSTART]
    table = []
    for path, label in KEY_PATHS.items():
        whole, above = ratios(medians, label)
        target = {"extension": "≤ 0.15× (aim 0.10×)", "boto3": "≤ 0.35× (report)"}.get(path, "—")
        table.append((f"cold mint — {label}", f"{medians[label]:.0f} ms (quickstart {quickstart:.0f} ms, "
                      f"bare interpreter {bare:.0f} ms)", f"{above:.3f}× above bare / {whole:.3f}× whole", target))
    before = KEY_PATHS["extension"] + SOURCES_ONLY
    saving = medians[before] - medians[KEY_PATHS["extension"]]
    whole, above = ratios(medians, before)
    table.append(("cold mint — key secret via extension, sources only (as SAM's own Python build shipped it, "
                  "before functions/build.py)", f"{medians[before]:.0f} ms (bytecode saves {saving:.0f} ms)",
                  f"{above:.3f}× above bare / {whole:.3f}× whole", "—"))
    return table


if __name__ == "__main__":
    print("\n".join(report(run())))

"""Run every benchmark in one process and print the figures, the ratios and the README's figures table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

from benchmarks import (  # noqa: E402
    cold_start,
    function_verifies,
    library_imports,
    relay_latency,
    streaming,
    warm_mint,
)
from benchmarks.deployed import machine_header, machine_summary  # noqa: E402

COMMAND = "make bench"


def main() -> None:
    started = time.perf_counter()
    print("\n".join(machine_header(COMMAND)), end="\n\n", flush=True)
    cold = cold_start.run()
    print("\n".join(cold_start.report(cold)), end="\n\n", flush=True)
    cold_mint_ms = cold[cold_start.KEY_PATHS["extension"]]
    verifying = function_verifies.run()
    print("\n".join(function_verifies.report(verifying)), end="\n\n", flush=True)
    imports = library_imports.run()
    print("\n".join(library_imports.report(imports, cold_mint_ms)), end="\n\n", flush=True)
    warm = warm_mint.run()
    print("\n".join(warm_mint.report(warm)), end="\n\n", flush=True)
    relay = relay_latency.run()
    print("\n".join(relay_latency.report(relay)), end="\n\n", flush=True)
    stream = streaming.run()
    print("\n".join(streaming.report(stream)), end="\n\n", flush=True)
    table = [*cold_start.rows(cold), *function_verifies.rows(verifying),
             *library_imports.rows(imports, cold_mint_ms), *warm_mint.rows(warm),
             *relay_latency.rows(relay), *streaming.rows(stream)]
    print("README figures table:\n")
    print("| configuration | figure | ratio | target |")
    print("|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(f"\nmeasured {time.strftime('%Y-%m-%d')}, {machine_summary()}, `{COMMAND}`")
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

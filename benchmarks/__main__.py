"""Run every benchmark in one process and print the figures and ratios."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

from benchmarks import cold_start, relay_latency, streaming, warm_mint  # noqa: E402


def main() -> None:
    for module in (cold_start, warm_mint, relay_latency, streaming):
        print("\n".join(module.report(module.run())), flush=True)
        print()


if __name__ == "__main__":
    main()

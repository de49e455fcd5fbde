"""Figures the reliability tests measure, printed in the terminal summary even when output is captured."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "reliability-figures.txt"


@dataclass
class FigureBook:
    """Every figure of the session, in the order the tests recorded them, grouped by topic."""

    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, topic: str, text: str) -> None:
        self.rows.append((topic, text))

    def lines(self) -> list[str]:
        out: list[str] = []
        topics: dict[str, list[str]] = {}
        for topic, text in self.rows:
            topics.setdefault(topic, []).append(text)
        for topic, texts in topics.items():
            out.append(f"{topic}:")
            out.extend(f"  {text}" for text in texts)
        return out


class Figures:
    """What one test hands the book: `figures("Load", "p50 mint 1.2 ms")`."""

    def __init__(self, book: FigureBook) -> None:
        self._book = book

    def __call__(self, topic: str, text: str) -> None:
        self._book.add(topic, text)


def percentile(samples: Sequence[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms_summary(seconds: Sequence[float]) -> str:
    """'p50 1.23 ms, p99 4.56 ms, max 7.89 ms' for a list of durations in seconds."""
    return (f"p50 {percentile(seconds, 50) * 1000:.2f} ms, p99 {percentile(seconds, 99) * 1000:.2f} ms, "
            f"max {max(seconds) * 1000:.2f} ms, mean {statistics.fmean(seconds) * 1000:.2f} ms")

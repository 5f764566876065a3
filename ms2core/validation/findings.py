"""Collecting findings: a capped list per (code, key) plus exact counts, mergeable across workers.

A corrupt 10 GB array must not produce a 10 GB report: each (code, key) keeps its
first ``max_per_check`` findings and counts the rest, so the report stays small
and the counts stay exact.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage_schemas.validation import CheckCount, Finding, severity_of


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> JSON-safe python; NaN/Inf as strings (JSON has no NaN)."""
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()] if value.size <= 16 else f"array{value.shape}"
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class FindingSink:
    max_per_check: int = 20
    findings: list[Finding] = field(default_factory=list)
    total: Counter = field(default_factory=Counter)  # code -> every occurrence
    _listed: Counter = field(default_factory=Counter)  # (code, key) -> listed

    def room(self, code: str, key: str | None) -> int:
        return max(0, self.max_per_check - self._listed[(code, key)])

    def add(self, code: str, message: str, *, episode: int | None = None, key: str | None = None,
            index: int | None = None, row: int | None = None, value: Any = None, expected: Any = None,
            occurrences: int = 1) -> None:
        """Record one finding (``occurrences`` > 1: it stands for that many bad rows/values)."""
        self.total[code] += occurrences
        if self.room(code, key):
            self._listed[(code, key)] += 1
            self.findings.append(Finding(
                code=code, severity=severity_of(code), message=message, episode=episode, key=key,
                index=index, row=row, value=jsonable(value), expected=jsonable(expected)))

    def count_only(self, code: str, occurrences: int) -> None:
        if occurrences > 0:
            self.total[code] += occurrences

    def merge(self, other: FindingSink) -> None:
        for f in other.findings:
            if self.room(f.code, f.key):
                self._listed[(f.code, f.key)] += 1
                self.findings.append(f)
        self.total.update(other.total)

    @property
    def n_errors(self) -> int:
        return sum(n for code, n in self.total.items() if severity_of(code) == "error")

    @property
    def n_warnings(self) -> int:
        return sum(n for code, n in self.total.items() if severity_of(code) == "warning")

    def counts(self) -> list[CheckCount]:
        listed = Counter(f.code for f in self.findings)
        return [CheckCount(code=c, severity=severity_of(c), count=n, listed=listed[c])
                for c, n in sorted(self.total.items())]

    def sorted_findings(self) -> list[Finding]:
        order = {"error": 0, "warning": 1}
        return sorted(self.findings, key=lambda f: (order[f.severity], f.code, f.key or "",
                                                    -1 if f.episode is None else f.episode,
                                                    -1 if f.index is None else f.index))

"""The closing table of ``make bench``: every ratio of issue 13 next to its target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    label: str
    value: float | None  # None: the part was skipped
    target: float
    at_least: bool = True  # False: the value must stay at or below the target
    unit: str = "x"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "skipped"
        met = self.value >= self.target if self.at_least else self.value <= self.target
        return "meets" if met else "MISSES"

    def row(self) -> str:
        fmt = "{:,.0f} " if self.unit != "x" else "{:.2f}"
        value = "n/a" if self.value is None else (fmt.format(self.value) + self.unit).strip()
        bound = (">= " if self.at_least else "<= ") + (fmt.format(self.target) + self.unit).strip()
        note = f"  {self.note}" if self.note else ""
        return f"  {self.label:<58} {value:>10} {bound:>11}  {self.verdict:<7}{note}"


def print_targets(targets: list[Target]) -> None:
    print(f"  {'measure':<58} {'value':>10} {'target':>11}  verdict")
    for target in targets:
        print(target.row())
    missed = sum(t.verdict == "MISSES" for t in targets)
    print(
        f"  {missed} of {len(targets)} targets missed (a baseline: the bench gates on errors only)"
    )

"""The outcome of one `make check-kernels` check (a kernel or a dataset) and the stage's printout."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckResult:
    name: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def format_results(results: list[CheckResult]) -> str:
    """One OK/FAIL line per check, then its problems, warnings and notes, indented."""
    lines = []
    for r in results:
        lines.append(f"{'OK  ' if r.ok else 'FAIL'} {r.name}")
        lines += [f"     problem: {p}" for p in r.problems]
        lines += [f"     warning: {w}" for w in r.warnings]
        lines += [f"     {n}" for n in r.notes]
    return "\n".join(lines)

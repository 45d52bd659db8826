"""A preflight check's answer, one line of `python -m lmmreg doctor`'s table (lmmreg.doctor).

The checks live with what they check: a describer backend's in its module (`preflight`, found through
lmmreg.describe.backends), the CLIP weights' in lmmreg.clip.weights (`preflight`), the raw datasets' in
lmmreg.data.checks (`check_datasets`), the MLflow store's in lmmreg.tracking.health; doctor runs them and prints
the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, MISSING = "ready", "warning", "MISSING"

Verdict = tuple[str, str, str]  # (status, detail, fix): a check's answer before doctor names its line


@dataclass
class Check:
    name: str
    status: str  # OK, WARN or MISSING
    detail: str
    fix: str = ""
    # A dataset check's numbers as found on disk ({"train": n, "test": n, "classes": n}); the disk estimate uses them.
    dataset: str = ""
    counts: dict[str, int] = field(default_factory=dict)

"""What the paper's tables can resolve: its Table 1 gains in test images, and the exact McNemar p they could have.

The paper reports one run per cell and no test. Its gain of LMM-Reg. over the baseline is Δ points of a test set
of N images, so Δ·N/100 images. McNemar's test looks only at the discordant images (one method right, the other
wrong): with k = b − c more images won than lost, the p depends on how many images flipped at all. Best case:
every flip favours LMM-Reg. (b = k, c = 0, p = 2·0.5^k). At a discordance rate r, b + c = r·N and b − c = k.
The rates shown are 2, 4 and 6 % and the one measured on this report's own runs (the demo's).
"""

from __future__ import annotations

from lmmreg.config import Params
from lmmreg.report.cells import cell_runs, correct_matrix, fmt
from lmmreg.report.paper import DATASET_TITLES, PAPER
from lmmreg.report.snapshot import Snapshot
from lmmreg.stats import mcnemar_p

PAPER_DATASETS = ("ucf101", "era", "bar")
# The paper's test sets (PAPER.md; params.yaml's sources.<ds>.expected.test says the same and wins if present).
PAPER_TEST_SIZES = {"ucf101": 3783, "era": 1391, "bar": 654}
RATES = (0.02, 0.04, 0.06)


def paper_test_size(params: Params | None, ds: str) -> int:
    if params is not None and ds in params.sources and params.sources[ds].expected.get("test"):
        return int(params.sources[ds].expected["test"])
    return PAPER_TEST_SIZES[ds]


def gain_in_images(ds: str, n_test: int) -> tuple[float, int]:
    """Table 1's Δ (LMM-Reg. − baseline) in points and in images of the test set."""
    delta = PAPER["lmm_reg"][ds] - PAPER["finetune"][ds]
    return delta, round(delta * n_test / 100.0)


def p_at_rate(k: int, n_test: int, rate: float | None) -> tuple[int, float]:
    """(discordant images, exact two-sided McNemar p) for a net gain of k images; rate None = the best case
    (every discordant image favours LMM-Reg.). The discordant count is r·N rounded to the parity of k (b − c = k
    needs b + c ≡ k mod 2) and never below k."""
    if rate is None:
        return k, mcnemar_p(k, 0)
    disc = max(k, round(rate * n_test))
    if (disc - k) % 2:
        disc += 1
    return disc, mcnemar_p((disc + k) // 2, (disc - k) // 2)


def demo_discordance(snap: Snapshot, ds: str) -> float | None:
    """Mean share of test images on which lmm_reg and finetune disagree in correctness, over paired seeds."""
    base = {r["seed"]: r for r in cell_runs(snap, ds, "finetune")}
    rates = []
    for r in cell_runs(snap, ds, "lmm_reg"):
        if r["seed"] in base:
            m = correct_matrix(snap, [base[r["seed"]], r])
            rates.append(float((m[0] != m[1]).mean()))
    return sum(rates) / len(rates) if rates else None


def resolution_markdown(snap: Snapshot, params: Params) -> list[str]:
    """The report's section "What the paper's tables can resolve" (markdown lines)."""
    measured = [x for x in (demo_discordance(snap, d) for d in params.datasets) if x is not None]
    demo_rate = sum(measured) / len(measured) if measured else None
    rates: list[tuple[str, float | None]] = [("best case", None)]
    if demo_rate is not None:
        rates.append((f"measured here {100 * demo_rate:.1f} %", demo_rate))
    rates += [(f"{100 * r:g} %", r) for r in RATES]
    md = ["## What the paper's tables can resolve", "",
          "Table 1's gain of LMM-Reg. over its baseline, as images of each test set, and the exact McNemar p "
          "(two-sided) that gain would have from one run of each, by how many test images the two runs disagree on "
          "(the discordance rate; best case: every disagreement favours LMM-Reg.). "
          + ("The measured rate is the mean share of test images on which this report's lmm_reg and finetune runs "
             "disagree, over paired seeds. " if demo_rate is not None else "")
          + "Cells: p (discordant images).", "",
          "| Dataset | test images | Δ (points) | Δ (images) | " + " | ".join(f"p, {n}" for n, _ in rates) + " |",
          "|" + "---|" * (4 + len(rates))]
    for ds in PAPER_DATASETS:
        n = paper_test_size(params, ds)
        delta, k = gain_in_images(ds, n)
        cells = []
        for _, rate in rates:
            disc, p = p_at_rate(k, n, rate)
            cells.append(f"{p:.3g} ({disc})")
        md.append(f"| {DATASET_TITLES[ds]} | {n:,} | {fmt(delta, 3)} | {k} | " + " | ".join(cells) + " |")
    md += ["", "A p above 0.05 means one run per method on that test set cannot tell the gain from chance at that "
           "discordance; the paper reports single runs and no test.", ""]
    return md

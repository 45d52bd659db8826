"""The report never turns good cells into "missing": runs the store lacks come from the snapshot DVC restored."""

from __future__ import annotations

from pathlib import Path


def test_fill_from_snapshot_takes_only_what_the_store_lacks_of_this_configuration(small_params, monkeypatch):
    from lmmreg import report as rep

    monkeypatch.setattr(rep, "_expected", lambda params, prepared: [
        ("demo", "lmm_reg", {"config_id": "C", "ablation_id": "A", "alpha": "0.01"}),
        ("demo", "finetune", {"config_id": "F", "ablation_id": "AF", "alpha": "0.0"})])

    def snap(rows: list[tuple], missing: list[str]) -> rep.Snapshot:
        runs = [{"dataset": "demo", "method": m, "seed": s, "role": role, "alpha": a, "config_id": c,
                 "ablation_id": ab, "run_id": rid} for m, s, role, a, c, ab, rid in rows]
        return rep.Snapshot(runs, {r["run_id"]: [(1, 50.0)] for r in runs},
                            {r["run_id"]: {"ids": ["x"], "labels": [0], "preds": [0]} for r in runs}, missing)

    store = snap([("lmm_reg", 0, "current", "0.01", "C", "A", "s0")],
                 ["demo/lmm_reg/seed 1", "demo/finetune/seed 0", "demo/finetune/seed 1"])
    kept = snap([("lmm_reg", 0, "current", "0.01", "C", "A", "k0"),     # the store has it: the store's run wins
                 ("lmm_reg", 1, "current", "0.01", "C", "A", "k1"),     # taken
                 ("finetune", 0, "current", "0.0", "OTHER", "AF", "k2"),  # another configuration: never
                 ("lmm_reg", 0, "ablation", "0.5", "C5", "A", "k3"),    # this configuration's alpha ablation: taken
                 ("lmm_reg", 1, "ablation", "0.5", "D5", "B", "k4"),    # another ablation family: never
                 ("lmm_reg", 2, "current", "0.01", "C", "A", "k5")], [])  # a seed the params do not ask for
    filled, n = rep.fill_from_snapshot(store, kept, small_params, prepared=Path("unused"))
    assert n == 2 and sorted(r["run_id"] for r in filled.runs) == ["k1", "k3", "s0"]
    assert filled.missing == ["demo/finetune/seed 0", "demo/finetune/seed 1"]
    assert {"k1", "k3"} <= set(filled.histories) and {"k1", "k3"} <= set(filled.predictions)

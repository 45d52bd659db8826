"""The report never turns good cells into "missing": runs the store lacks come from the snapshot DVC restored."""

from __future__ import annotations

from pathlib import Path


def test_fill_from_snapshot_takes_only_what_the_store_lacks_of_this_configuration(small_params, monkeypatch):
    from lmmreg import report as rep
    from lmmreg.report import snapshot

    monkeypatch.setattr(snapshot, "_expected", lambda params, prepared: [
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


def test_a_snapshot_from_before_a_column_existed_still_reads(tmp_path):
    """A kept snapshot written by an older checkout lacks the newer run columns: they read as unknown."""
    import math

    from lmmreg.report import FLOAT_FIELDS, INT_FIELDS, RUN_FIELDS, read_snapshot

    old = [k for k in RUN_FIELDS if k not in ("n_train_images", "train_steps", "reg_ce_ratio_first",
                                              "reg_ce_ratio_last", "point")]
    row = {k: "1" if k in INT_FIELDS else "0.5" if k in FLOAT_FIELDS else "x" for k in old}
    (tmp_path / "runs.csv").write_text(",".join(old) + "\n" + ",".join(row[k] for k in old) + "\n")
    (tmp_path / "histories.csv").write_text("run_id,epoch,test_acc\n")
    (tmp_path / "predictions.jsonl").write_text("")
    (tmp_path / "missing.json").write_text("[]")
    (run,) = read_snapshot(tmp_path).runs
    assert run["n_train_images"] == 0 and run["seed"] == 1 and math.isnan(run["reg_ce_ratio_first"])
    assert run["point"] == "" and run["reported_test_acc"] == 0.5


def test_a_run_in_two_roles_keeps_one_curve(tmp_path):
    """A run of the current configuration is also a study point (two rows, one run): Fig. 2 must see its curve once,
    also from a snapshot an earlier checkout wrote with the curve twice."""
    from lmmreg.report import FLOAT_FIELDS, INT_FIELDS, RUN_FIELDS, Snapshot, read_snapshot, write_snapshot

    row = {k: 0.5 if k in FLOAT_FIELDS else 1 if k in INT_FIELDS else "" for k in RUN_FIELDS}
    rows = [{**row, "dataset": "demo", "method": "finetune", "seed": 0, "role": role, "point": "p", "run_id": "r1"}
            for role in ("current", "study")]
    curve = [(1, 10.0), (2, 50.0), (3, 80.0)]
    write_snapshot(Snapshot(rows, {"r1": curve}, {"r1": {"preds": []}}, []), tmp_path)
    assert (tmp_path / "histories.csv").read_text().count("r1,") == 3
    assert read_snapshot(tmp_path).histories["r1"] == curve
    (tmp_path / "histories.csv").write_text("run_id,epoch,test_acc\n" + "".join(
        f"r1,{e},{a!r}\n" for e, a in curve + curve))  # as written before the fix
    assert read_snapshot(tmp_path).histories["r1"] == curve

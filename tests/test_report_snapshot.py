"""The report never turns good cells into "missing": runs the store lacks come from the snapshot DVC restored."""

from __future__ import annotations

from pathlib import Path


def test_fill_from_snapshot_takes_only_what_the_store_lacks_of_this_configuration(small_params, monkeypatch):
    """Kept runs fill what the store lacks: this configuration's, and at each study point the method's runs of its
    configuration there (fine-tuning's current runs stand at alpha = 0.5 too); never another configuration's."""
    import dataclasses
    import json

    from lmmreg import report as rep
    from lmmreg.identity import at_point, run_identity, study_point

    params = dataclasses.replace(small_params, train=dataclasses.replace(small_params.train,
                                                                         methods=["finetune", "lmm_reg"]))
    monkeypatch.setattr("lmmreg.data.manifest.manifest_digest", lambda _: "d")
    here = study_point(params)
    half = {**here, "alpha": "0.5"}

    def cid(method: str, point: dict) -> str:
        return run_identity(at_point(params, point), dataset="demo", method=method, data_digest="d")["config_id"]

    def snap(rows: list[tuple], missing: list[str]) -> rep.Snapshot:
        runs = [{"dataset": "demo", "method": m, "seed": s, "role": role, "point": json.dumps(pt, sort_keys=True),
                 "alpha": pt["alpha"], "config_id": c, "ablation_id": "a", "run_id": rid}
                for m, s, role, pt, c, rid in rows]
        return rep.Snapshot(runs, {r["run_id"]: [(1, 50.0)] for r in runs},
                            {r["run_id"]: {"ids": ["x"], "labels": [0], "preds": [0]} for r in runs}, missing)

    C, F, C5 = cid("lmm_reg", here), cid("finetune", here), cid("lmm_reg", half)
    assert C5 != C and cid("finetune", half) == F
    store = snap([("lmm_reg", 0, "current", here, C, "s0")],
                 ["demo/lmm_reg/seed 1", "demo/finetune/seed 0", "demo/finetune/seed 1"])
    kept = snap([("lmm_reg", 0, "current", here, C, "k0"),     # the store has it: the store's run wins
                 ("lmm_reg", 1, "current", here, C, "k1"),     # taken
                 ("finetune", 0, "current", here, "OTHER", "k2"),  # another configuration: never
                 ("lmm_reg", 0, "study", half, C5, "k3"),      # this configuration's alpha = 0.5 point: taken
                 ("finetune", 0, "study", half, F, "k6"),      # fine-tuning's run stands there too: taken
                 ("lmm_reg", 1, "study", half, "D5", "k4"),    # not the configuration at that point: never
                 ("lmm_reg", 2, "current", here, C, "k5")], [])  # a seed the params do not ask for
    filled, n = rep.fill_from_snapshot(store, kept, params, prepared=Path("unused"))
    assert n == 3 and sorted(r["run_id"] for r in filled.runs) == ["k1", "k3", "k6", "s0"]
    assert filled.missing == ["demo/finetune/seed 0", "demo/finetune/seed 1"]
    assert {"k1", "k3", "k6"} <= set(filled.histories) and {"k1", "k3", "k6"} <= set(filled.predictions)

    # The snapshot of an experiment at alpha = 0.5 (kept) lists this configuration's runs as a study point, and an
    # earlier experiment's (another current point) as current: once the store holds them as current runs, neither
    # comes in a second time (fine-tuning's n must stay 1 per seed).
    store = snap([("lmm_reg", 0, "current", here, C, "s0"), ("finetune", 0, "current", here, F, "s1")], [])
    kept = snap([("lmm_reg", 0, "study", here, C, "s0"), ("finetune", 0, "study", here, F, "s1"),
                 ("finetune", 0, "current", half, F, "s1")], [])
    filled, n = rep.fill_from_snapshot(store, kept, params, prepared=Path("unused"))
    assert n == 0 and sorted((r["run_id"], r["role"]) for r in filled.runs) == [("s0", "current"), ("s1", "current")]


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

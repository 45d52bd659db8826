"""A generated snapshot with every registered method, three seeds, a shots slice and an alpha slice, and the
report files it produced: the fixture that keeps the report's output byte-identical across refactors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmmreg.config import Params, parse_params
from lmmreg.identity import study_point
from tests.conftest import small_raw_params

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report_before"
METHODS = ("zero_shot", "zero_shot_lmm", "linear_probe", "concat", "finetune", "lmm_reg", "prolip", "gda",
           "tip_adapter", "tip_adapter_f", "clip_adapter", "coop", "linear_probe_lbfgs")
N_TEST, N_CLASSES, SEEDS = 60, 4, (0, 1, 2)
# The files compared as text (a diff shows what moved); figures are compared by hash.
TEXT_FILES = ("tables.md", "tables.csv", "tables.tex", "per_class.csv", "study/study.csv")


def fixture_params() -> Params:
    return parse_params(small_raw_params(**{"report.bootstrap": 200, "seeds": list(SEEDS)}))


def fixture_snapshot(params: Params) -> dict:
    """Runs as the snapshot files hold them (`rows`, `histories`, `predictions`, `missing`), drawn from a seeded
    generator: each method has a skill per point, each seed a small shift, each image a difficulty."""
    rng = np.random.default_rng(1234)
    base = study_point(params)
    points = [{**base, "shots": s} for s in ("1", "2", "4", "all")] + [{**base, "alpha": "0.1"},
                                                                       {**base, "alpha": "1.0"}]
    labels = [i % N_CLASSES for i in range(N_TEST)]
    difficulty = rng.random(N_TEST)
    rows, histories, predictions = [], {}, {}
    for pi, point in enumerate(points):
        role = "current" if point == base else "study"
        for mi, method in enumerate(METHODS):
            if role == "study" and point["alpha"] != base["alpha"] and method not in ("finetune", "lmm_reg"):
                continue
            shots = point["shots"]
            skill = 0.35 + 0.03 * mi + (0.25 if shots == "all" else 0.05 * int(shots))
            for seed in SEEDS:
                rid = f"r{pi}{mi:02d}{seed}"
                right = difficulty < skill + rng.normal(0, 0.04) + rng.normal(0, 0.08, N_TEST) * 0.5
                preds = [y if ok else (y + 1 + int(rng.integers(0, N_CLASSES - 1))) % N_CLASSES
                         for y, ok in zip(labels, right, strict=True)]
                acc = 100.0 * float(np.mean(right))
                predictions[rid] = {"ids": [f"t{i:03d}" for i in range(N_TEST)], "labels": labels, "preds": preds}
                histories[rid] = [(e, round(acc * (0.6 + 0.1 * e), 4)) for e in (1, 2, 3, 4)]
                lm = method == "lmm_reg"
                rows.append({"dataset": "demo", "method": method, "seed": seed, "alpha": point["alpha"],
                             "role": role, "run_id": rid, "config_id": f"c{pi}{mi}", "ablation_id": f"a{mi}",
                             "reported_test_acc": acc, "final_test_acc": acc, "best_test_acc": acc + 1.0,
                             "reported_epoch": 4, "intra_inter_ratio": round(0.4 + 0.01 * mi + 0.003 * seed, 6),
                             "silhouette": round(0.1 + 0.02 * mi - 0.004 * seed, 6), "demo": "True",
                             "point": json.dumps(point, sort_keys=True),
                             "n_train_images": N_CLASSES * (8 if shots == "all" else int(shots)), "train_steps": 40,
                             "reg_ce_ratio_first": 1.5 if lm else float("nan"),
                             "reg_ce_ratio_last": 0.5 if lm else float("nan")})
    return {"rows": rows, "histories": histories, "predictions": predictions, "missing": ["demo/coop/seed 3"]}


def classes() -> dict[str, list[str]]:
    return {"demo": [f"class {i}" for i in range(N_CLASSES)]}


def output_digest(out: Path) -> dict[str, str]:
    """sha256 of every file the report wrote under `out` (relative path -> hex)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def build_outputs(out: Path) -> None:
    """The report of the fixture snapshot, written to `out` through the snapshot files (as the stage does)."""
    from lmmreg.report import Snapshot, build_report, read_snapshot, write_snapshot

    params = fixture_params()
    raw = fixture_snapshot(params)
    write_snapshot(Snapshot(raw["rows"], raw["histories"], raw["predictions"], raw["missing"]), out / "snapshot")
    build_report(read_snapshot(out / "snapshot"), params, classes(), out)


def write_fixture(tmp: Path) -> None:
    """Regenerate the fixture from the current code (only for a deliberate change of the report's output)."""
    import shutil

    build_outputs(tmp)
    FIXTURE.mkdir(parents=True, exist_ok=True)
    for name in TEXT_FILES:
        (FIXTURE / name.replace("/", "__")).write_bytes((tmp / name).read_bytes())
    (FIXTURE / "digest.json").write_text(json.dumps(output_digest(tmp), indent=1, sort_keys=True) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    import tempfile

    write_fixture(Path(tempfile.mkdtemp()) / "out")

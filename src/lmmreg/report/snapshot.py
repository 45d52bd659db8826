"""The report's snapshot: the runs it used, picked out of MLflow by configuration and written to files.

`collect_snapshot` (the only part that needs MLflow, through lmmreg.tracking) picks runs by configuration, never by
recency alone; `write_snapshot`/`read_snapshot` store them as runs.csv, histories.csv, predictions.jsonl and
missing.json, so the report rebuilds byte-identical tables from the files alone (`--from-snapshot`).
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmmreg.config import Params

RUN_FIELDS = ("dataset", "method", "seed", "alpha", "role", "run_id", "config_id", "ablation_id",
              "reported_test_acc", "final_test_acc", "best_test_acc", "reported_epoch", "intra_inter_ratio",
              "silhouette", "demo", "point", "n_train_images", "train_steps", "reg_ce_ratio_first",
              "reg_ce_ratio_last", "converged", "converged_reason")
FLOAT_FIELDS = ("reported_test_acc", "final_test_acc", "best_test_acc", "intra_inter_ratio", "silhouette",
                "reg_ce_ratio_first", "reg_ce_ratio_last")
INT_FIELDS = ("seed", "reported_epoch", "n_train_images", "train_steps")


@dataclass
class Snapshot:
    # RUN_FIELDS; role "current" (this configuration) or "study" (another point of its regime study); "point" is
    # the JSON of the run's study variables (lmmreg.identity.STUDY_VARIABLES)
    runs: list[dict]
    histories: dict[str, list[tuple[int, float]]]  # run_id -> [(epoch, test_acc)]
    predictions: dict[str, dict]  # run_id -> {"ids", "labels", "preds"}
    missing: list[str] = field(default_factory=list)  # "dataset/method/seed" that have no run
    # statistics already computed from these runs (the same cell appears in several tables); never written
    memo: dict = field(default_factory=dict, repr=False, compare=False)


# ---------------------------------------------------------------- collect (the only part that needs MLflow)

def _digests(params: Params, prepared: Path) -> dict[str, str]:
    """Each dataset's manifest digest (part of every run identity), read once per report."""
    from lmmreg.data.manifest import manifest_digest

    return {ds: manifest_digest(prepared / ds) for ds in params.datasets}


def _expected(params: Params, digests: dict[str, str]) -> list[tuple[str, str, dict]]:
    from lmmreg.identity import run_identity

    return [(ds, method, run_identity(params, dataset=ds, method=method, data_digest=digest))
            for ds, digest in digests.items() for method in params.train.methods]


def _config_at(params: Params, ds: str, method: str, point: str, digest: str) -> str:
    """The method's config_id at a study point (its JSON, as runs.csv holds it) under these params: what its runs
    there carry, whether trained at that point or reused unchanged from another."""
    from lmmreg.identity import at_point, run_identity

    return run_identity(at_point(params, json.loads(point)), dataset=ds, method=method,
                        data_digest=digest)["config_id"]


def _pick(runs: list[dict], seeds: list[int]) -> dict[int, dict]:
    """Newest finished run per seed among runs of one configuration (`runs` come newest first)."""
    chosen: dict[int, dict] = {}
    for r in runs:
        seed = int(r["tags"]["lmmreg.seed"])
        if seed in seeds and seed not in chosen:
            chosen[seed] = r
    return chosen


def _row(r: dict, role: str, point: str) -> dict:
    t, m = r["tags"], r["metrics"]
    # α: the run's param, logged only for the methods that have one (runs from before: param "none" or a tag)
    alpha = r["params"].get("alpha", t.get("lmmreg.alpha", "none"))
    row = {"dataset": t["lmmreg.dataset"], "method": t["lmmreg.method"], "seed": int(t["lmmreg.seed"]),
           "alpha": alpha, "role": role, "run_id": r["run_id"], "config_id": t["lmmreg.config_id"],
           "ablation_id": t["lmmreg.ablation_id"], "reported_epoch": int(m.get("reported_epoch", 0)),
           "demo": t.get("lmmreg.demo", "False"), "point": point, "n_train_images": int(m.get("n_train_images", 0)),
           "train_steps": int(m.get("train_steps", 0)),
           # "true" / "false" from the engine; "" = a run from before the tag existed (unknown)
           "converged": t.get("lmmreg.converged", ""), "converged_reason": t.get("lmmreg.converged_reason", "")}
    for k in FLOAT_FIELDS:
        row[k] = float(m.get(k, float("nan")))
    return row


def collect_snapshot(params: Params, *, prepared: Path) -> Snapshot:
    from lmmreg import tracking
    from lmmreg.identity import at_point, study_id, study_point

    rows, missing = [], []
    current = json.dumps(study_point(params), sort_keys=True)
    digests = _digests(params, prepared)
    uris: dict[str, str | None] = {}  # run id -> its artifact URI, from the searches

    def search(tags: dict[str, str]) -> list[dict]:
        found = tracking.search_child_runs(tags)
        uris.update((r["run_id"], r.get("artifact_uri")) for r in found)
        return found

    study_runs = {ds: search({"lmmreg.study_id": study_id(params, dataset=ds, data_digest=d)})
                  for ds, d in digests.items()}
    # Every point (alpha, shots, noise ...) some run of this configuration was trained at, as study_point spells it.
    points = {ds: sorted({json.dumps(study_point(at_point(params, json.loads(r["tags"].get("lmmreg.point", current)))),
                                     sort_keys=True) for r in runs} - {current}) for ds, runs in study_runs.items()}
    for ds, method, ident in _expected(params, digests):
        chosen = _pick(search({"lmmreg.config_id": ident["config_id"]}), params.seeds)
        missing += [f"{ds}/{method}/seed {s}" for s in params.seeds if s not in chosen]
        rows += [_row(chosen[s], "current", current) for s in sorted(chosen)]
        # The regime study: at every other point, the method's runs of its configuration there (newest per seed).
        # Picked by config_id, not by the point a run was trained at: incremental training re-trains only what a
        # point changes, so fine-tuning's runs from the baseline are its runs at every alpha as well.
        by_config: dict[str, list[dict]] = {}
        for r in study_runs[ds]:
            if r["tags"]["lmmreg.method"] == method:
                by_config.setdefault(r["tags"]["lmmreg.config_id"], []).append(r)
        for point in points[ds]:
            picked = _pick(by_config.get(_config_at(params, ds, method, point, digests[ds]), []), params.seeds)
            rows += [_row(picked[s], "study", point) for s in sorted(picked)]
    ids = list(dict.fromkeys(r["run_id"] for r in rows))  # a reused run stands at several points: fetched once
    histories = {i: tracking.metric_history(i, "test_acc") for i in ids}
    predictions = {i: tracking.load_json_artifact(i, "predictions.json", artifact_uri=uris.get(i)) for i in ids}
    return Snapshot(rows, histories, predictions, missing)


def fill_from_snapshot(snap: Snapshot, kept: Snapshot, params: Params, *, prepared: Path) -> tuple[Snapshot, int]:
    """`snap` plus the runs of this configuration (and of its regime study's points) that only `kept` holds.

    `kept` is the snapshot DVC restored (made where the store held the runs: a teammate's machine, before a
    `dvc pull`), so a store that lacks them never turns good cells into "missing". The store's runs win;
    a kept run of another configuration is never used. Returns the snapshot and how many runs came from `kept`."""
    digests = _digests(params, prepared)
    current_ids = {ident["config_id"] for _, _, ident in _expected(params, digests)}

    @functools.cache
    def config_at(ds: str, method: str, point: str) -> str:  # many kept runs share a (dataset, method, point)
        return _config_at(params, ds, method, point, digests[ds])

    from lmmreg.identity import study_point

    here = json.dumps(study_point(params), sort_keys=True)

    def key(r: dict) -> tuple:
        # A current run is the method's run of the current configuration whatever point it was trained at (a run
        # reused unchanged, or its copy in a teammate's store, carries the point of the experiment that trained it);
        # a kept study run at what is now the current point is a current run too (the snapshot of an experiment
        # at another point listed the current configuration's runs as a study point).
        current = r["role"] == "current" or r["point"] == here
        return r["dataset"], r["method"], "current" if current else "study", "" if current else r["point"], r["seed"]

    have = {key(r) for r in snap.runs}
    taken = []
    for r in kept.runs:
        if r["role"] == "study" and r["point"] == here:  # the current configuration's run, listed as a study point
            r = {**r, "role": "current"}
        k = key(r)
        if k in have or r["seed"] not in params.seeds or r["run_id"] not in kept.predictions:
            continue
        if r["dataset"] not in digests or r["method"] not in params.train.methods:
            continue
        if r["role"] == "current":
            wanted = r["config_id"] in current_ids
        else:  # a study point of this configuration: the method's runs there, as the store would give them
            wanted = bool(r["point"]) and r["config_id"] == config_at(r["dataset"], r["method"], r["point"])
        if wanted:
            taken.append(r)
            have.add(k)
    filled = {f"{r['dataset']}/{r['method']}/seed {r['seed']}" for r in taken if r["role"] == "current"}
    return Snapshot(runs=snap.runs + taken,
                    histories={**snap.histories, **{r["run_id"]: kept.histories.get(r["run_id"], []) for r in taken}},
                    predictions={**snap.predictions, **{r["run_id"]: kept.predictions[r["run_id"]] for r in taken}},
                    missing=[m for m in snap.missing if m not in filled]), len(taken)


# ---------------------------------------------------------------- snapshot files

def write_snapshot(snap: Snapshot, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(snap.runs, key=lambda r: (r["dataset"], r["method"], r["role"], r["point"], r["seed"]))
    with (folder / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(r[k]) if k in FLOAT_FIELDS else r.get(k, "") for k in RUN_FIELDS})
    with (folder / "histories.csv").open("w", newline="") as f:
        f.write("run_id,epoch,test_acc\n")
        written: set[str] = set()
        for r in rows:  # a run can be two rows (the current configuration and a study point): its curve once
            if r["run_id"] in written:
                continue
            written.add(r["run_id"])
            for epoch, acc in snap.histories[r["run_id"]]:
                f.write(f"{r['run_id']},{epoch},{acc!r}\n")
    with (folder / "predictions.jsonl").open("w") as f:
        for run_id in dict.fromkeys(r["run_id"] for r in rows):  # once per run, as its curve
            f.write(json.dumps({"run_id": run_id, **snap.predictions[run_id]}, sort_keys=True) + "\n")
    (folder / "missing.json").write_text(json.dumps(sorted(snap.missing), indent=1) + "\n")


def read_snapshot(folder: Path) -> Snapshot:
    for name in ("runs.csv", "histories.csv", "predictions.jsonl", "missing.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: snapshot incomplete (run the report stage with MLflow first)")
    with (folder / "runs.csv").open(newline="") as f:
        runs = []
        for r in csv.DictReader(f):
            # A snapshot written before a column existed (an older checkout's, a teammate's) reads as unknown there.
            r = {k: "" for k in RUN_FIELDS} | {k: v for k, v in r.items() if v is not None}
            for k in INT_FIELDS:
                r[k] = int(r[k]) if r[k] != "" else 0
            for k in FLOAT_FIELDS:
                r[k] = float(r[k]) if r[k] != "" else float("nan")
            runs.append(r)
    histories: dict[str, list[tuple[int, float]]] = {}
    with (folder / "histories.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            curve = histories.setdefault(r["run_id"], [])
            if not curve or int(r["epoch"]) > curve[-1][0]:  # a snapshot written twice per run: each epoch once
                curve.append((int(r["epoch"]), float(r["test_acc"])))
    predictions = {}
    with (folder / "predictions.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            predictions[rec.pop("run_id")] = rec
    return Snapshot(runs, histories, predictions, json.loads((folder / "missing.json").read_text()))

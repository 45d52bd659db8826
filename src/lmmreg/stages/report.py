"""Stage `report`: Tables 1-2, Fig. 2, statistics and the alpha ablation, regenerated from MLflow runs.

    python -m lmmreg.stages.report --prepared data/prepared --out reports --pretrain-metrics metrics/pretrain.json
    python -m lmmreg.stages.report --prepared data/prepared --out reports --from-snapshot reports/snapshot

Runs are picked by configuration (see `lmmreg.methods.run_identity`); the snapshot they were read into
(`reports/snapshot/`, with `reports/runs.csv` as its run list) rebuilds the same tables without `mlflow.db`.
The snapshot is DVC-tracked and persists across runs: a run the store lacks (a fresh clone after `dvc pull`)
is taken from it, and a store without any run of this configuration stops the stage, tables untouched.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lmmreg import tracking
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.errors import InputError
from lmmreg.report import Snapshot, build_report, collect_snapshot, fill_from_snapshot, read_snapshot, write_snapshot

log = logging.getLogger(__name__)


def main(params: Params, *, prepared: Path, out: Path, from_snapshot: Path | None = None,
         pretrain_metrics: Path | None = None) -> None:
    classes = {}
    for d in params.datasets:
        path = prepared / d / "classes.json"
        classes[d] = json.loads(path.read_text()) if path.is_file() else []
    snap_dir = out / "snapshot"
    if from_snapshot is None:
        write_snapshot(collect_from_store(params, prepared=prepared, kept_dir=snap_dir), snap_dir)
    elif from_snapshot.resolve() != snap_dir.resolve():
        shutil.copytree(from_snapshot, snap_dir, dirs_exist_ok=True)
    snap = read_snapshot(snap_dir)  # both paths build from the files, so they give identical tables
    shutil.copyfile(snap_dir / "runs.csv", out / "runs.csv")
    # What the demo CLIP is (the pretrain_clip stage's summary), for the report's banner.
    pretrain = json.loads(pretrain_metrics.read_text()) if pretrain_metrics and pretrain_metrics.is_file() else None
    build_report(snap, params, classes, out, pretrain)
    if snap.missing:
        log.warning("missing runs (named in the report): %s", ", ".join(snap.missing))
    log.info("report from %d runs -> %s", len(snap.runs), out)


def collect_from_store(params: Params, *, prepared: Path, kept_dir: Path) -> Snapshot:
    """The store's runs of this configuration, completed from the snapshot in `kept_dir` (if any)."""
    uri = tracking.tracking_uri()
    snap = collect_snapshot(params, prepared=prepared)
    try:
        kept = read_snapshot(kept_dir)
    except FileNotFoundError:
        kept = None
    if kept is not None:
        snap, n_kept = fill_from_snapshot(snap, kept, params, prepared=prepared)
        if n_kept:
            log.warning("%d run(s) not in the MLflow store %s: taken from %s", n_kept, uri, kept_dir)
    if not any(r["role"] == "current" for r in snap.runs):
        raise InputError(
            f"no finished run of the current configuration in the MLflow store {uri}, nor in {kept_dir}: "
            "the report would be empty, so it was not written. Train first (`dvc repro`), or point this "
            "checkout at the team's tracking server: `export MLFLOW_TRACKING_URI=http://<host>:<port>` or write "
            f"that URI to {tracking.project_root() / tracking.URI_FILE} (README, Team setup).")
    return snap


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--from-snapshot", type=Path, default=None)
    parser.add_argument("--pretrain-metrics", type=Path, default=None, help="the pretrain_clip stage's summary")
    run_stage(lambda a, p: main(p, prepared=a.prepared, out=a.out, from_snapshot=a.from_snapshot,
                                pretrain_metrics=a.pretrain_metrics), parser)


if __name__ == "__main__":
    cli()

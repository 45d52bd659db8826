"""Stage `report`: Tables 1-2, Fig. 2, statistics and the alpha ablation, regenerated from MLflow runs.

    python -m lmmreg.stages.report --prepared data/prepared --out reports --pretrain-metrics metrics/pretrain.json
    python -m lmmreg.stages.report --prepared data/prepared --out reports --from-snapshot reports/snapshot

Runs are picked by configuration (see `lmmreg.methods.run_identity`); the snapshot they were read into
(`reports/snapshot/`, with `reports/runs.csv` as its run list) rebuilds the same tables without `mlflow.db`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.report import build_report, collect_snapshot, read_snapshot, write_snapshot

log = logging.getLogger(__name__)


def main(params: Params, *, prepared: Path, out: Path, from_snapshot: Path | None = None,
         pretrain_metrics: Path | None = None) -> None:
    classes = {}
    for d in params.datasets:
        path = prepared / d / "classes.json"
        classes[d] = json.loads(path.read_text()) if path.is_file() else []
    snap_dir = out / "snapshot"
    if from_snapshot is None:
        write_snapshot(collect_snapshot(params, prepared=prepared), snap_dir)
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

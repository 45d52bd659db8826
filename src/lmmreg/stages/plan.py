"""Stage `plan@<dataset>`: one plan file per method of `train.methods`, holding exactly what that method's result
depends on (lmmreg.plan). Each `train@<dataset>-<method>` stage depends on its own file, so a params change
re-trains only the methods whose plan it changes. Takes a second or two.

    python -m lmmreg.stages.plan --dataset demo --manifest data/prepared/demo --features data/features/demo.pt \
        --text data/text/demo --centroids data/centroids/demo.pt --out data/plan/demo
"""

from __future__ import annotations

import logging
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import manifest_digest
from lmmreg.methods.registry import check_methods
from lmmreg.plan import TrainPaths, build_plan, write_plan

log = logging.getLogger(__name__)


def main(params: Params, *, dataset: str, paths: TrainPaths, out: Path) -> dict[str, dict]:
    check_methods(params.train.methods)
    digest = manifest_digest(paths.manifest)
    digests: dict[Path, str] = {}
    plans = {m: build_plan(params, dataset=dataset, method=m, paths=paths, data_digest=digest, digests=digests)
             for m in params.train.methods}
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        if stale.stem not in plans:
            stale.unlink()
    for method, plan in plans.items():
        write_plan(plan, out / f"{method}.json")
    log.info("%s: plans of %d methods written to %s", dataset, len(plans), out)
    return plans


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    for name in ("manifest", "features", "text", "centroids", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    run_stage(lambda a, p: main(p, dataset=a.dataset, out=a.out, paths=TrainPaths(
        manifest=a.manifest, features=a.features, text=a.text, centroids=a.centroids)), parser)


if __name__ == "__main__":
    cli()

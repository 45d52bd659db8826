"""Not a dvc.yaml stage of its own: stages `plan@<ds>`, every `train@<ds>-<method>` and `summarize@<ds>` of one
dataset in one process, in DVC's order (for tests, benchmarks and a run without DVC). Unlike `dvc repro` it
re-trains every method, changed or not. `prepare_inputs` runs the stages before them (prepare to features) the
same way.

    python -m lmmreg.stages.train_all --dataset demo --manifest data/prepared/demo --features data/features/demo.pt \
        --text data/text/demo --centroids data/centroids/demo.pt --models models/demo --metrics metrics/demo.json \
        --plots plots/demo.csv
"""

from __future__ import annotations

from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.plan import TrainPaths
from lmmreg.stages import plan, summarize, train


def prepare_inputs(params: Params, *, dataset: str, raw: Path, root: Path) -> TrainPaths:
    """Stages `prepare`, `describe`, `embed_text`, `centroids` and `features` of one dataset in-process, writing
    under `root` as dvc.yaml lays them out (`root/data/prepared/<ds>` ...); returns the train stages' inputs."""
    from lmmreg.stages import centroids, describe, embed_text, features, prepare

    prepared = root / "data/prepared" / dataset
    prepare.main(params, dataset=dataset, raw=raw, out=prepared)
    desc = root / "data/descriptions" / dataset
    describe.main(params, dataset=dataset, raw=raw, manifest=prepared, store=desc / "store.jsonl",
                  out=desc / "descriptions.jsonl")
    text = root / "data/text" / dataset
    embed_text.main(params, manifest=prepared, descriptions=desc / "descriptions.jsonl", out=text)
    cents = root / "data/centroids" / f"{dataset}.pt"
    centroids.main(params, manifest=prepared, text=text, out=cents)
    feats = root / "data/features" / f"{dataset}.pt"
    features.main(params, raw=raw, manifest=prepared, out=feats, workers=0)
    return TrainPaths(manifest=prepared, features=feats, text=text, centroids=cents)


def main(params: Params, *, dataset: str, manifest: Path, features: Path, text: Path, centroids: Path,
         models: Path, metrics: Path, plots: Path, device: str = "cpu", log_model: bool = True,
         plans: Path | None = None) -> dict[str, dict]:
    """Plan, train every method of `train.methods` (`models/<ds>/methods/<method>/`) and summarize; returns the
    summary per method (mean and std of test accuracy, config id, run per seed)."""
    paths = TrainPaths(manifest=manifest, features=features, text=text, centroids=centroids)
    plans = plans or models / "plan"
    plan.main(params, dataset=dataset, paths=paths, out=plans)
    for method in params.train.methods:
        train.main(params, dataset=dataset, method=method, plan=plans / f"{method}.json", paths=paths,
                   out=models / "methods" / method, device=device)
    return summarize.main(params, dataset=dataset, paths=paths, methods_dir=models / "methods",
                          runs=models / "runs.json", metrics=metrics, plots=plots, log_model=log_model)


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    for name in ("manifest", "features", "text", "centroids", "models", "metrics", "plots"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--no-model", action="store_true", help="do not log and register the champion")
    run_stage(lambda a, p: main(p, dataset=a.dataset, manifest=a.manifest, features=a.features, text=a.text,
                                centroids=a.centroids, models=a.models, metrics=a.metrics, plots=a.plots,
                                log_model=not a.no_model), parser)


if __name__ == "__main__":
    cli()

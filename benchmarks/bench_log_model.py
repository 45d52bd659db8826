"""What logging the champion model adds to `train`: the default demo (params.yaml as committed), every stage's
`main` in one process, then `train.main` run `--repeats` times alternating without and with the model.

    python benchmarks/bench_log_model.py [--work /tmp/bench_log_model] [--repeats 2]

Prints one line per train run: its wall time and the model-logging time the stage records in
`models/<ds>/runs.json` (`model.seconds`). Uses its own MLflow store under `--work`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from lmmreg.config import load_params
from lmmreg.stages import centroids, describe, embed_text, features, make_demo, prepare, train_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_log_model"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.work.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["DVC_ROOT"] = str(root)  # the store: <work>/mlflow.db
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    params = load_params(args.params)
    ds = params.datasets[0]
    raw, prepared, desc = root / "data/raw" / ds, root / "data/prepared" / ds, root / "data/descriptions" / ds
    text, cents = root / "data/text" / ds, root / "data/centroids" / f"{ds}.pt"
    feats = root / "data/features" / f"{ds}.pt"
    make_demo.main(params.demo, out=raw)
    prepare.main(params, dataset=ds, raw=raw, out=prepared)
    describe.main(params, dataset=ds, raw=raw, manifest=prepared, store=desc / "store.jsonl",
                  out=desc / "descriptions.jsonl")
    embed_text.main(params, manifest=prepared, descriptions=desc / "descriptions.jsonl", out=text)
    centroids.main(params, manifest=prepared, text=text, out=cents)
    features.main(params, raw=raw, manifest=prepared, out=feats, workers=0)
    for log_model in [False, True] * args.repeats:
        start = time.perf_counter()
        train_all.main(params, dataset=ds, manifest=prepared, features=feats, text=text, centroids=cents,
                   models=root / "models" / ds, metrics=root / "metrics" / f"{ds}.json",
                   plots=root / "plots" / f"{ds}.csv", log_model=log_model)
        total = time.perf_counter() - start
        model = json.loads((root / "models" / ds / "runs.json").read_text())["model"]
        logged = f"model ({model['method']}) logged in {model['seconds']:.2f} s" if model else "no model"
        print(f"train log_model={log_model}: {total:.1f} s, {logged}", flush=True)


if __name__ == "__main__":
    main()

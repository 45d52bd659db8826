"""Both sides of the convergence check (lmmreg.convergence) on two small image folders, with a recipe ladder.

    python benchmarks/bench_convergence.py                                   # the project's CLIP (see below)
    python benchmarks/bench_convergence.py --clip-pretrained path/to/checkpoint.pt
    python benchmarks/bench_convergence.py --tiny --work /tmp/x --out /tmp/x/report.md   # a smoke run in seconds

Builds, under --work (default /tmp/lmmreg-bench-convergence), two `layout: imagefolder` datasets
(`<root>/train/<class>/*.png`, `<root>/test/<class>/*.png`), each with a descriptions file of its own wording for
the `file` describe backend (docs/describe.md):

- `digits`: scikit-learn's 8x8 handwritten digits (load_digits, 1,797 images, shipped with scikit-learn). A
  permutation with numpy's default_rng(0) orders them; the first 400 are train, the next 200 test. Each image is
  scaled from 0-16 to dark ink on white (255 - 255 * v / 16), upscaled to 64x64 (bilinear), 3 channels. Classes
  are folders `zero` ... `nine` (the class prompt then reads "a photo of a seven."), in digit order.
- `shapes`: a slice of the project's demo world, lmmreg.data.demo.generate_demo with params.yaml's `demo:` section
  but n_classes 8, 50 train / 25 test per class (400 / 200 images), read back as a plain imagefolder.

Descriptions (10 per image, train and test alike): templates that name the image's class plus one phrase read from
the image itself (digits: how much ink, by tertile of the training images; shapes: the scene's shape, colour and
count from the generator's scenes.json). Only linear_probe and linear_probe_lbfgs train here; both read the image
features alone, so the descriptions only have to let the pipeline's describe/embed_text/centroids stages run.

CLIP: params.yaml's (`clip.model`, and `clip.pretrained`, the pretrain_clip stage's checkpoint
models/clip_pretrain/checkpoint.pt of this checkout), or `--clip-pretrained PATH`. When neither file exists, or the
default one does not load, or with --random-init, the run uses a random-init CLIP (`clip.pretrained: ""`) and says
so in its output and its report section.

For each folder the in-process pipeline runs once up to the features (prepare, describe, embed_text, centroids,
features), then train_all (plan, train, summarize) with train.methods [linear_probe, linear_probe_lbfgs] at each
rung of a recipe ladder: lr 1e-4 / 100 epochs (the paper's), 1e-3 / 100, 1e-2 / 100, 1e-2 / 300, 1e-2 / 1000. The
climb stops at the first rung where no linear_probe seed is flagged. The check reads the training images only, so
the ladder never looks at a test number. MLflow goes to `<work>/mlflow.db` (DVC_ROOT and MLFLOW_TRACKING_URI point
there for the run, as tests/conftest.py's mlflow_root does), never the checkout's store.

Per rung it prints, and appends to reports/bench_convergence.md (with the load average), the linear probe's test and
training accuracy, the reference probe's training accuracy, linear_probe_lbfgs's test accuracy, how many seeds carry
the MLflow tag lmmreg.converged = "false" (read back from the store) with one flagged seed's reason, whether the
train log warned, and whether reports/tables.md (built by the report stage from that store) marks the cell with †.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's lmmreg, whatever the venv's editable install points at

import numpy as np  # noqa: E402
import yaml  # noqa: E402

METHODS = ["linear_probe", "linear_probe_lbfgs"]
PROBE_ROW = "| CLIP (image emb.) [1] |"  # METHOD_TITLES["linear_probe"]'s row in reports/tables.md
DEFAULT_CHECKPOINT = "models/clip_pretrain/checkpoint.pt"


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a run is: the folders, the seeds and the recipe ladder (lr, epochs)."""

    digits_train: int
    digits_test: int
    digit_classes: int
    shapes_classes: int
    shapes_train_per_class: int
    shapes_test_per_class: int
    seeds: tuple[int, ...]
    ladder: tuple[tuple[float, int], ...]


FULL = Size(400, 200, 10, 8, 50, 25, (0, 1, 2),
            ((1.0e-4, 100), (1.0e-3, 100), (1.0e-2, 100), (1.0e-2, 300), (1.0e-2, 1000)))
# --tiny: two classes per folder, a few images, one seed, two rungs: the plumbing (layout, tags, log, dagger) only.
TINY = Size(24, 12, 2, 2, 12, 6, (0,), ((1.0e-4, 5), (1.0e-2, 100)))

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a handwritten digit {name}",
    "a small grey picture of the number {name}",
    "the numeral {name} written by hand",
    "a blurry low-resolution scan of a hand-written {name}",
    "dark pen strokes on white paper forming a {name}",
    "a pixelated {name} in the middle of a square image",
    "a single handwritten number: {name}",
    "a digit {name} drawn with a thick marker",
    "a tiny black and white image of the figure {name}",
    "{ink} strokes of a handwritten {name}",
)
SHAPE_TEMPLATES = (
    "a picture of a {name}",
    "a simple flat illustration of a {name}",
    "a small cartoon-like drawing of a {name} scene",
    "{count} {color} {shape}s on a {background} background",
    "an image with {color} {shape} shapes",
    "a colourful synthetic picture showing a {name}",
    "geometric figures arranged as a {name}",
    "a low-resolution rendering of a {name}",
    "a {background} backdrop with some {shape}s",
    "a computer-generated scene: {name}",
)


# ---------------------------------------------------------------------------------------------------- the folders

def build_digits(root: Path, size: Size, *, image_size: int = 64, seed: int = 0) -> list[dict]:
    """sklearn's digits as `root/{train,test}/<digit word>/<index>.png`; returns the description records."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < size.digit_classes)
    order = keep[np.random.default_rng(seed).permutation(len(keep))]  # [n] indices into load_digits
    chosen = {"train": order[:size.digits_train], "test": order[size.digits_train:size.digits_train + size.digits_test]}
    ink = digits.images.reshape(len(digits.images), -1).sum(1)  # [1797] ink mass, for one content phrase
    cuts = np.quantile(ink[chosen["train"]], [1 / 3, 2 / 3])
    records = []
    for split, idx in chosen.items():
        for i in idx:
            name = DIGIT_NAMES[int(digits.target[i])]
            rel = f"{split}/{name}/{i:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            grey = (255 - np.round(digits.images[i] * 255 / 16)).astype(np.uint8)  # [8, 8] dark ink on white
            Image.fromarray(grey, "L").resize((image_size, image_size), Image.BILINEAR).convert("RGB").save(root / rel)
            thickness = ("thin", "medium", "heavy")[int(np.searchsorted(cuts, ink[i]))]
            records.append({"id": rel, "descriptions": [t.format(name=name, ink=thickness) for t in DIGIT_TEMPLATES]})
    return records


def build_shapes(root: Path, size: Size, demo: dict) -> list[dict]:
    """A slice of the demo world (params.yaml's `demo:` but for the counts) as an imagefolder; description records."""
    from lmmreg.config import DemoConfig
    from lmmreg.data.demo import generate_demo

    cfg = DemoConfig(**{**demo, "n_classes": size.shapes_classes, "train_per_class": size.shapes_train_per_class,
                        "test_per_class": size.shapes_test_per_class, "image_size": 64})
    generate_demo(cfg, root)
    scenes = json.loads((root / "scenes.json").read_text())
    records = []
    for rel, scene in sorted(scenes.items()):
        name = Path(rel).parent.name
        records.append({"id": rel, "descriptions": [t.format(name=name, **{k: scene[k] for k in (
            "count", "color", "shape", "background")}) for t in SHAPE_TEMPLATES]})
    return records


def folder_counts(root: Path) -> dict[str, dict[str, int]]:
    """{split: {class: images}} of an imagefolder."""
    return {split: {d.name: len(list(d.glob("*.png"))) for d in sorted((root / split).iterdir()) if d.is_dir()}
            for split in ("train", "test")}


# ------------------------------------------------------------------------------------------------------ the CLIP

def choose_clip(explicit: Path | None, raw: dict, *, random_init: bool = False) -> tuple[str, str]:
    """(clip.pretrained to use, a sentence saying which CLIP that is and why)."""
    from lmmreg.clip.build import build_clip
    from lmmreg.config import parse_params

    if random_init:
        return "", f"RANDOM-INIT CLIP ({raw['clip']['model']}, clip.pretrained: \"\"): asked for by --random-init"
    if explicit is not None:
        path = explicit.resolve()
        if not path.is_file():
            raise SystemExit(f"--clip-pretrained {explicit}: no such file")
        return str(path), f"the checkpoint {path} (--clip-pretrained)"
    default = (ROOT / raw["clip"]["pretrained"]).resolve() if raw["clip"]["pretrained"] else ROOT / DEFAULT_CHECKPOINT
    if not default.is_file():
        return "", (f"RANDOM-INIT CLIP ({raw['clip']['model']}, clip.pretrained: \"\"): the project's default "
                    f"checkpoint {default} does not exist (run `dvc repro pretrain_clip`, ~6 min, or pass "
                    "--clip-pretrained); these are not the demo CLIP's numbers")
    probe = copy.deepcopy(raw)
    probe["clip"]["pretrained"] = str(default)
    try:
        build_clip(parse_params(probe).clip)
    except Exception as e:  # noqa: BLE001 - an old or damaged checkpoint: say so and fall back
        return "", (f"RANDOM-INIT CLIP ({raw['clip']['model']}, clip.pretrained: \"\"): the project's default "
                    f"checkpoint {default} did not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    age_h = (time.time() - default.stat().st_mtime) / 3600
    return str(default), f"the project's demo CLIP {default} (params.yaml's clip.pretrained, {age_h:.1f} h old)"


# ----------------------------------------------------------------------------------------------------- the runs

@contextlib.contextmanager
def isolated_store(work: Path, n_threads: int):
    """MLflow and the project root pointed at `work`, and torch/BLAS held to `n_threads` (one process: the train
    stage's seeds run in this one), for the duration; everything restored after (the test runs this in-process)."""
    import torch
    from threadpoolctl import threadpool_limits

    from lmmreg import threads

    keys = ("DVC_ROOT", "MLFLOW_TRACKING_URI", "LMMREG_THREADS", "LMMREG_JOBS", *threads.ENV_VARS)
    saved, torch_threads = {k: os.environ.get(k) for k in keys}, torch.get_num_threads()
    os.environ.update({"DVC_ROOT": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                       "LMMREG_THREADS": str(n_threads), **{k: str(n_threads) for k in threads.ENV_VARS}})
    os.environ.pop("LMMREG_JOBS", None)
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(torch_threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Warnings(logging.Handler):
    """Collects the train stage's warning lines (warn_unconverged's)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def folder_params(base: dict, name: str, *, classes: list[str], size: Size, clip: str, import_file: Path,
                  expected: dict) -> dict:
    """params.yaml turned to one imagefolder dataset, the file describe backend, the two probes and our seeds."""
    raw = copy.deepcopy(base)
    raw["datasets"] = [name]
    raw["seeds"] = list(size.seeds)
    raw["sources"][name] = {"layout": "imagefolder", "options": {"classes": classes}, "expected": expected}
    raw["describe"].update(backend="file", model=f"bench-templates-{name}", import_file=str(import_file),
                           options={"key": "id"})
    raw["clip"]["pretrained"] = clip
    raw["pretrain"]["enabled"] = False  # nothing is pretrained here: the checkpoint, if any, is read as a file
    raw["train"]["methods"] = list(METHODS)
    if size is TINY:
        raw["baselines"]["linear_probe_lbfgs"].update(c_grid=[1.0, 1.0e-2], search_steps=1, max_iter=100)
        raw["report"]["bootstrap"] = 50
    return raw


def prepare_folder(params, work: Path, name: str):
    """prepare, describe (file backend), embed_text, centroids, features: the train stages' inputs."""
    from lmmreg.stages import train_all

    return train_all.prepare_inputs(params, dataset=name, raw=work / "raw" / name, root=work)


def run_rung(params, work: Path, name: str, paths, rung: str) -> dict:
    """train_all for the two probes, the MLflow tags read back, the train log's warnings, the report's dagger."""
    from mlflow.tracking import MlflowClient

    from lmmreg.stages import report, train_all

    models = work / "models" / name / rung
    handler = Warnings()
    train_log = logging.getLogger("lmmreg.seed_run")
    train_log.addHandler(handler)
    started = time.perf_counter()
    try:
        train_all.main(params, dataset=name, manifest=paths.manifest, features=paths.features, text=paths.text,
                       centroids=paths.centroids, models=models, metrics=work / "metrics" / name / f"{rung}.json",
                       plots=work / "plots" / name / f"{rung}.csv", log_model=False)
    finally:
        train_log.removeHandler(handler)
    train_s = time.perf_counter() - started
    probe = json.loads((models / "methods/linear_probe/result.json").read_text())
    lbfgs = json.loads((models / "methods/linear_probe_lbfgs/result.json").read_text())
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    tags = {s: client.get_run(r["run_id"]).data.tags for s, r in probe["runs"].items()}
    flagged = sorted(s for s, t in tags.items() if t.get("lmmreg.converged") == "false")
    out = work / "reports" / name / rung
    report.main(params, prepared=work / "data/prepared", out=out)
    md = (out / "tables.md").read_text()
    row = next((ln for ln in md.splitlines() if ln.startswith(PROBE_ROW)), "")
    runs = list(probe["runs"].values())
    return {
        "folder": name, "lr": params.train.lr, "epochs": params.train.epochs,
        "steps": int(runs[0]["final"]["train_steps"]),
        "probe_test": probe["test_acc_mean"], "probe_test_std": probe["test_acc_std"],
        "probe_train": float(np.mean([r["final"]["train_acc"] for r in runs])),
        "reference_train": float(np.mean([r["final"]["reference_train_acc"] for r in runs])),
        "lbfgs_test": lbfgs["test_acc_mean"], "lbfgs_test_std": lbfgs["test_acc_std"],
        "seeds": len(runs), "flagged": len(flagged),
        "tags_present": all("lmmreg.converged" in t for t in tags.values()),
        "reason": tags[flagged[0]]["lmmreg.converged_reason"] if flagged else "",
        "reason_seed": flagged[0] if flagged else "",
        "log_warned": any(f"{name} linear_probe:" in ln and "under-trained" in ln for ln in handler.lines),
        "dagger": " †" in row, "report": str(out / "tables.md"), "train_s": train_s,
    }


# --------------------------------------------------------------------------------------------------- the output

HEADER = ("| folder | train.lr | train.epochs | optimiser steps | linear_probe test acc | its train acc | "
          "reference (L-BFGS) train acc | linear_probe_lbfgs test acc | seeds flagged | train log warns | "
          "† in tables.md | reason (one flagged seed) |")


def table_row(r: dict) -> str:
    reason = f"{r['reason_seed']}: {r['reason']}" if r["reason"] else "-"
    return (f"| {r['folder']} | {r['lr']:g} | {r['epochs']} | {r['steps']} | {r['probe_test']:.2f} ± "
            f"{r['probe_test_std']:.2f} | {r['probe_train']:.2f} | {r['reference_train']:.2f} | "
            f"{r['lbfgs_test']:.2f} ± {r['lbfgs_test_std']:.2f} | {r['flagged']}/{r['seeds']} | "
            f"{'yes' if r['log_warned'] else 'no'} | {'yes' if r['dagger'] else 'no'} | {reason} |")


def verdict(rows: list[dict]) -> str:
    """One folder's outcome, from its rungs."""
    name, last = rows[0]["folder"], rows[-1]
    consistent = all(r["dagger"] == (r["flagged"] > 0) == r["log_warned"] and r["tags_present"] for r in rows)
    marks = ("every rung: a flagged rung is tagged, warned about and marked †, a passing one is not"
             if consistent else "NOT CONSISTENT: a flagged rung lacks its tag, warning or †, or a passing one has one")
    if last["flagged"] == 0:
        gap = last["lbfgs_test"] - last["probe_test"]
        return (f"{name}: the check passes for all seeds at lr {last['lr']:g}, {last['epochs']} epochs "
                f"({last['steps']} steps); there the engine's linear probe tests at {last['probe_test']:.2f}% against "
                f"linear_probe_lbfgs's {last['lbfgs_test']:.2f}% ({gap:+.2f} points L-BFGS minus engine). "
                f"Report/tags/log: {marks}.")
    return (f"{name}: STILL FLAGGED at every rung ({last['flagged']}/{last['seeds']} seeds at lr {last['lr']:g}, "
            f"{last['epochs']} epochs, {last['steps']} steps): the engine's probe ends at {last['probe_test']:.2f}% "
            f"test / {last['probe_train']:.2f}% train against the reference's {last['reference_train']:.2f}% train "
            f"and linear_probe_lbfgs's {last['lbfgs_test']:.2f}% test. Report/tags/log: {marks}.")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmmreg-bench-convergence"))
    ap.add_argument("--clip-pretrained", type=Path, default=None,
                    help="a CLIP checkpoint file (default: params.yaml's)")
    ap.add_argument("--random-init", action="store_true", help="random-init CLIP even if a checkpoint exists")
    ap.add_argument("--folders", nargs="+", choices=("digits", "shapes"), default=["digits", "shapes"])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--tiny: 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (1: leave the other core alone)")
    ap.add_argument("--tiny", action="store_true", help="2 classes, a few images, one seed, two rungs (a smoke test)")
    ap.add_argument("--out", type=Path, default=None,
                    help="report to append to (default: reports/bench_convergence.md; "
                         "--tiny: <work>/bench_convergence.md)")
    args = ap.parse_args(argv)
    size = TINY if args.tiny else FULL
    if args.seeds:
        size = dataclasses.replace(size, seeds=tuple(args.seeds))
    out_md = args.out or (args.work / "bench_convergence.md" if args.tiny else ROOT / "reports/bench_convergence.md")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from lmmreg.config import parse_params

    load_before, started = load(), time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with isolated_store(args.work.resolve(), args.threads):
        clip, clip_says = choose_clip(args.clip_pretrained, base, random_init=args.random_init)
        print(f"CLIP: {clip_says}", flush=True)
        rows: list[dict] = []
        layouts: dict[str, dict] = {}
        for name in args.folders:
            raw_dir = args.work / "raw" / name
            if name == "digits":
                records = build_digits(raw_dir, size)
                classes = list(DIGIT_NAMES[:size.digit_classes])
                expected = {"train": size.digits_train, "test": size.digits_test, "classes": size.digit_classes}
            else:
                records = build_shapes(raw_dir, size, base["demo"])
                classes = [p["name"] for p in json.loads((raw_dir / "classes.json").read_text())]
                expected = {"train": size.shapes_classes * size.shapes_train_per_class,
                            "test": size.shapes_classes * size.shapes_test_per_class, "classes": size.shapes_classes}
            import_file = args.work / "imports" / f"{name}.jsonl"
            import_file.parent.mkdir(parents=True, exist_ok=True)
            import_file.write_text("".join(json.dumps(r) + "\n" for r in records))
            layouts[name] = folder_counts(raw_dir)
            print(f"{name}: {sum(layouts[name]['train'].values())} train / {sum(layouts[name]['test'].values())} "
                  f"test images, {len(layouts[name]['train'])} classes -> {raw_dir}", flush=True)
            raw = folder_params(base, name, classes=classes, size=size, clip=clip, import_file=import_file,
                                expected=expected)
            t = time.perf_counter()
            paths = prepare_folder(parse_params(raw), args.work, name)
            print(f"{name}: prepare .. features in {time.perf_counter() - t:.1f} s", flush=True)
            for lr, epochs in size.ladder:
                rung_raw = copy.deepcopy(raw)
                rung_raw["train"].update(lr=lr, epochs=epochs)
                r = run_rung(parse_params(rung_raw), args.work, name, paths, f"lr{lr:g}-e{epochs}")
                rows.append(r)
                print(table_row(r) + f"  [{r['train_s']:.0f} s]", flush=True)
                if r["flagged"] == 0:
                    break  # the check passes for every seed: no need to climb further
    seconds = time.perf_counter() - started
    verdicts = [verdict([r for r in rows if r["folder"] == name]) for name in args.folders]
    text = "\n".join([
        f"## {dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} ({os.cpu_count()} CPUs, "
        f"{args.threads} thread(s)), load average before {load_before}, after {load()}; {seconds:.0f} s"
        f"{' (--tiny)' if args.tiny else ''}", "",
        f"CLIP: {clip_says}.", "",
        "Folders: " + "; ".join(f"{n} {sum(c['train'].values())} train / {sum(c['test'].values())} test, "
                                f"{len(c['train'])} classes" for n, c in layouts.items())
        + f"; seeds {list(size.seeds)}; test acc mean ± std over seeds, train accs means.", "",
        HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *map(table_row, rows), "",
        *[f"- {v}" for v in verdicts], ""])
    print("\n" + text)
    head = ("# The convergence check on small image folders (benchmarks/bench_convergence.py)\n\n"
            "Each rung trains linear_probe (the engine: Adam, batch 64) and linear_probe_lbfgs (scikit-learn "
            "L-BFGS, C searched on a validation split of train) on the same frozen features; the climb stops at the "
            "first rung where no linear_probe seed is flagged. The check reads the training images only.\n\n")
    new = not (out_md.is_file() and out_md.stat().st_size)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    with out_md.open("a") as f:
        f.write((head if new else "") + text + "\n")
    print(f"appended to {out_md}")
    return {"rows": rows, "layouts": layouts, "clip": clip, "clip_says": clip_says, "seconds": seconds,
            "verdicts": verdicts, "out": str(out_md)}


if __name__ == "__main__":
    main()

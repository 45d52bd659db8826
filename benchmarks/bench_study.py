"""Run the default regime study (configs/study.yaml) on the demo with DVC, timing every point; `make study`.

    python benchmarks/bench_study.py                    # the whole study: dvc repro, one `dvc exp run` per point,
                                                        # then the report; timings -> reports/bench_study.md
    python benchmarks/bench_study.py --reduced          # two values per variable and block: a timing that is
                                                        # extrapolated (and labelled so) to the whole grid
    python benchmarks/bench_study.py --dry-run          # print the experiments, run nothing
    python benchmarks/bench_study.py --jobs 2           # queue every point, run them two at a time (`make study`)

Each point is an experiment, `dvc exp run -S key=value ... summarize@<dataset>`, setting every study key of the
grid (so no value leaks from the previous point), and DVC re-runs only what its params touch: alpha, normalize and
reg_reduction re-train LMM-Reg., shots and head_init the methods that read them; a description-noise change re-runs
describe, embed_text, centroids and the methods that read the LMM. One after another (the default), points are
ordered by noise so the LMM is asked again once per noise value; queued (`--jobs N`), by `schedule`: the points
that train the most runs no earlier point provides first, so the workers finish together. At the end params.yaml
is restored and `dvc repro` rebuilds the report (the unchanged stages come back from DVC's run-cache), whose regime
study then covers every point. Torch runs single-threaded
unless OMP_NUM_THREADS is set: on a shared 2-core machine two threads made the demo's train stage 11x slower (279 s
against 25 s), and the tiny matrices gain nothing from a second thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_repro import log_sizes, start_workers, wait_for_queue, worker_tasks  # noqa: E402


def _get(raw: dict, key: str):
    node = raw
    for part in key.split("."):
        node = node[part]
    return node


def _yaml_value(v) -> str:
    return json.dumps(v) if isinstance(v, (bool, int, float)) else str(v)


def expand(grid_file: Path, params: dict, *, reduced: bool) -> tuple[list[dict], list[str]]:
    """Every point of every block (each point sets all keys the grid names), deduplicated, baseline dropped,
    ordered by description noise (the baseline's first)."""
    blocks = yaml.safe_load(grid_file.read_text())["blocks"]
    keys = list(dict.fromkeys(k for b in blocks for k in b["grid"]))
    base = {k: _get(params, k) for k in keys}
    points: list[dict] = []
    for b in blocks:
        names = list(b["grid"])
        values = [b["grid"][k][:2] if reduced else b["grid"][k] for k in names]
        for combo in itertools.product(*values):
            p = {**base, **dict(zip(names, combo, strict=True))}
            if p != base and p not in points:
                points.append(p)
    noise = "describe.options.noise"
    if noise in keys:
        order = list(dict.fromkeys([base[noise], *(p[noise] for p in points)]))
        points.sort(key=lambda p: order.index(p[noise]))
    return points, keys


def _configs(point: dict, params: dict) -> set[tuple[str, str, str]]:
    """(dataset, method, config_id) of every run a point needs: lmmreg.identity's configuration of the run, the
    params DVC's train stage of that method also reads. A configuration that ran before comes from the run-cache."""
    import copy

    from lmmreg.config import parse_params
    from lmmreg.identity import run_identity

    raw = copy.deepcopy(params)
    for key, value in point.items():
        parent, _, leaf = key.rpartition(".")
        (_get(raw, parent) if parent else raw)[leaf] = value
    here = parse_params(raw)
    return {(d, m, run_identity(here, dataset=d, method=m, data_digest="")["config_id"])
            for d in here.datasets for m in here.train.methods}


def schedule(points: list[dict], params: dict) -> list[tuple[dict, int]]:
    """The queue's order, and the runs each point trains afresh if every point before it has finished.

    Greedy: next comes the point with the most runs no earlier point (or the baseline) provides, the one more
    later points reuse first on a tie. So the points that every method trains for (the shots) go first, the
    4-shot point ahead of them all (eleven others build on it), and the points that re-train LMM-Reg. alone go
    last: the costliest first, so two workers finish together, and a point starts after what it reuses ran. A
    description-noise change counts two more (describe and embed_text re-run; describe is never run-cached)."""
    seen = _configs({}, params)
    todo = [(p, _configs(p, params)) for p in points]
    order = []
    def cost(p: dict, cfg: set, seen: set) -> int:
        return len(cfg - seen) + 2 * any(k.startswith("describe.") and v != _get(params, k) for k, v in p.items())

    def key(item, seen):
        p, cfg = item
        return cost(p, cfg, seen), sum(bool((cfg - seen) & other) for q, other in todo if q is not p)

    while todo:
        best = max(todo, key=lambda item: key(item, seen))  # the first of equals: the grid's order
        todo.remove(best)
        order.append((best[0], cost(*best, seen)))
        seen |= best[1]
    return order


def train_targets(params: dict) -> list[str]:
    """What a point runs, as dvc.yaml names it: `summarize@<dataset>` (every method's train stage, and the
    experiment's MLflow parent run), else the train stages DVC lists. One target, so DVC walks the pipeline once:
    measured on 2 cores, `dvc exp run -S alpha=... summarize@demo` 28.7 s against 50.9 s with the 13 `train@...`
    stages as targets. The report runs once, at the end."""
    try:
        listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = []
    summaries = [s for s in listed if s.startswith("summarize@")]
    found = summaries or [s for s in listed if s == "train" or s.startswith("train@")]
    return found or [f"train@{d}" for d in params["datasets"]]


def _run(cmd: list[str], env: dict) -> tuple[float, list[str], str]:
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    out = res.stdout + res.stderr
    if res.returncode != 0:
        sys.stderr.write(out[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {res.returncode})")
    return wall, re.findall(r"Running stage '([^']+)'", out), out


queue_wall = [0.0]  # queueing and running the points (they overlap, so their seconds do not add up)
task_seconds: list[float] = []  # the queue's worker tasks (one per point), in order of completion


def queue_points(commands: list[list[str]]) -> list[str]:
    """`dvc exp run --queue ...` for every command, in one process: DVC's own CLI entry point called in turn,
    so its imports and start-up are paid once (about 2 s a point instead of 6-10 s as separate processes).
    Queueing runs no stage and stores no environment (the workers take `dvc queue start`'s), so only the
    working directory matters. Returns the queued experiments' names."""
    import contextlib
    import io

    from dvc.cli import main as dvc_main

    names = []
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        for cmd in commands:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):  # a worker collecting its results holds the lock a moment: wait
                rc = dvc_main(["--wait-for-lock", *cmd[1:3], "--queue", *cmd[3:]])
            if rc != 0:
                raise SystemExit(f"{' '.join(cmd)} --queue failed (exit {rc}):\n{out.getvalue()[-2000:]}")
            names.append(re.search(r"Queued experiment '([^']+)'", out.getvalue()).group(1))
    finally:
        os.chdir(cwd)
    return names


def queued(points: list[dict], labels: list[str], command, env: dict, jobs: int) -> list[tuple[str, list[str], float]]:
    """Queue every point (`dvc exp run --queue`, all from this process) and run the queue at `-j jobs`; the
    workers' tasks' seconds come from their logs (bench_repro.worker_tasks), which do not name the points.

    The workers start as soon as the first `jobs` points are queued (the costliest, by `schedule`), and the rest
    is queued while they run: the queue is first in, first out, so the order holds, and queueing 52 points (about
    a second each) no longer delays the first stage. `dvc queue start` is asked again at the end: it starts only
    the workers that are not running (one that found the queue empty in between has stopped)."""
    t0 = time.perf_counter()  # the queueing counts: `make study` waits for it too
    celery = ROOT / ".dvc/tmp/exps/celery"
    seen = log_sizes(celery)  # an earlier queue's tasks are not this study's
    commands = [command(p) for p in points]
    names = queue_points(commands[:jobs])
    start_workers(jobs, env, ROOT)
    names += queue_points(commands[jobs:])
    print(f"queued {len(names)} points in {time.perf_counter() - t0:.0f} s (the workers started after {jobs})",
          flush=True)
    start_workers(jobs, env, ROOT)
    wait_for_queue(ROOT, env, expected=len(names), since=seen, restart=lambda: start_workers(jobs, env, ROOT))
    queue_wall[0] = time.perf_counter() - t0
    print(f"queueing and running {len(names)} points at -j {jobs}: {queue_wall[0]:.0f} s", flush=True)
    task_seconds[:] = [seconds for _, seconds in worker_tasks(celery, since=seen)]
    rows = []
    for name, label in zip(names, labels, strict=True):  # a worker task does not name its experiment: no seconds
        logs = subprocess.run(["dvc", "queue", "logs", name], cwd=ROOT, env=env, capture_output=True, text=True).stdout
        rows.append((label, re.findall(r"Running stage '([^']+)'", logs), math.nan))
    return rows


def _machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=Path, default=ROOT / "configs/study.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_study.md")
    ap.add_argument("--reduced", action="store_true", help="two values per variable per block, extrapolated")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="1: one `dvc exp run` after another (default); N > 1: queue every point and run them with "
                         "`dvc queue start -j N` (the workers share the cores: lmmreg.threads)")
    args = ap.parse_args()
    params_path = ROOT / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    points, keys = expand(args.grid, params, reduced=args.reduced)
    full, _ = expand(args.grid, params, reduced=False)
    targets = train_targets(params)

    def command(p: dict) -> list[str]:
        return ["dvc", "exp", "run", *itertools.chain.from_iterable(("-S", f"{k}={_yaml_value(v)}") for k, v in
                                                                   p.items()), *targets]

    if args.dry_run:
        for p in points:
            print(" ".join(command(p)))
        print(f"# {len(points)} experiments besides the baseline ({len(full)} in the whole grid)")
        return
    env = {**os.environ}
    # Some sandboxes set this; then every stage process recompiles mlflow, sklearn and torch from source (about
    # 10 s per process on a busy 2-core machine). A fresh clone writes the bytecode once, as Python does.
    no_bytecode = env.pop("PYTHONDONTWRITEBYTECODE", None) is not None
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    load0, started = os.getloadavg()[0], dt.datetime.now(dt.timezone.utc)
    rows = []
    subprocess.run([sys.executable, "-m", "lmmreg.tracking", "init"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    wall, stages, _ = _run(["dvc", "repro"], env)
    rows.append(("baseline: dvc repro", stages, wall))
    print(f"baseline {wall:.0f} s: {', '.join(stages) or 'nothing changed'}", flush=True)
    if args.jobs > 1:  # costliest first, and after the points they reuse (schedule)
        points = [p for p, _ in schedule(points, params)]
    labels = [", ".join(f"{k}={_yaml_value(v)}" for k, v in p.items() if v != _get(params, k)) for p in points]
    if args.jobs > 1:
        rows += queued(points, labels, command, env, args.jobs)
    else:
        try:
            for i, (p, label) in enumerate(zip(points, labels, strict=True), 1):
                wall, stages, _ = _run(command(p), env)
                rows.append((label, stages, wall))
                print(f"[{i}/{len(points)}] {label}: {wall:.0f} s ({', '.join(stages) or 'restored'})", flush=True)
        finally:
            params_path.write_text(original)
    # Queued experiments leave the workspace at the baseline, so only the report is stale: it reads every run.
    wall, stages, _ = _run(["dvc", "repro"] if args.jobs == 1 else ["dvc", "repro", "-f", "-s", "report"], env)
    rows.append(("report: params.yaml restored, dvc repro", stages, wall))
    total = sum(r[2] for r in rows) if args.jobs == 1 else rows[0][2] + rows[-1][2] + queue_wall[0]
    load1 = os.getloadavg()[0]

    def kind(stages: list[str]) -> str:
        return "re-describe" if any(s.startswith("describe@") for s in stages) else "train only"

    by_kind: dict[str, list[float]] = {}
    for _, stages, w in rows[1:-1]:
        by_kind.setdefault(kind(stages), []).append(w)
    md = [f"## Regime study benchmark, {started:%Y-%m-%dT%H:%M:%S}Z", "",
          f"`python benchmarks/bench_study.py{' --reduced' if args.reduced else ''}` (grid {args.grid.name}, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}), in this checkout after its `make repro`: the baseline, and any "
          f"point DVC's run-cache already holds, is restored, not re-run"
          f"{' (PYTHONDONTWRITEBYTECODE dropped for the stages)' if no_bytecode else ''}.",
          "", f"Machine: {_machine()}. Load average (1 min) {load0:.1f} at the start, {load1:.1f} at the end "
          "(other jobs shared the cores when it is above the core count).", "",
          f"**{'Measured (reduced grid)' if args.reduced else 'Measured (whole grid)'}: {len(points)} experiments "
          f"besides the baseline, {total / 60:.1f} min in all"
          + (f" (queueing the points and running them with `dvc queue start -j {args.jobs}`: "
             f"{queue_wall[0] / 60:.1f} min of it; "
             "a point's seconds below overlap another's)" if args.jobs > 1 else "") + ".**", ""]
    if args.reduced:
        kinds_full: dict[str, int] = {}
        prev = _get(params, "describe.options.noise") if "describe.options.noise" in keys else None
        for p in full:  # in run order, a point re-describes when its noise differs from the previous point's
            k = "re-describe" if prev is not None and p.get("describe.options.noise", prev) != prev else "train only"
            prev = p.get("describe.options.noise", prev)
            kinds_full[k] = kinds_full.get(k, 0) + 1
        mean = {k: sum(v) / len(v) for k, v in by_kind.items()}
        fallback = mean.get("train only", max(mean.values(), default=0.0))
        est = rows[0][2] + rows[-1][2] + sum(n * mean.get(k, fallback) for k, n in kinds_full.items())
        md += [f"**Extrapolated, not measured: the whole grid ({len(full)} experiments: "
               + ", ".join(f"{n} {k}" for k, n in sorted(kinds_full.items()))
               + ") at the measured mean per kind of point ("
               + ", ".join(f"{k} {m:.0f} s" for k, m in sorted(mean.items()))
               + f"), plus the baseline and the final report: ≈ {est / 60:.1f} min.**", ""]
    if task_seconds:
        md += [f"Worker tasks (one per point, in order of completion; a task does not name its point), seconds: "
               f"{', '.join(f'{t:.0f}' for t in task_seconds)}.", ""]
    md += ["| step | stages DVC ran | seconds |", "|---|---|---|"]
    md += [f"| {label} | {', '.join(stages) or '(restored from run-cache)'} | {'—' if w != w else f'{w:.0f}'} |"
           for label, stages, w in rows]
    md.append("")
    header = "# Regime study benchmark\n\nWritten by `benchmarks/bench_study.py` (`make study`).\n\n"
    old = args.out.read_text() if args.out.is_file() else header
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(old.rstrip("\n") + "\n\n" + "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

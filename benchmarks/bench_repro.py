"""What the user's three commands cost, from a clean clone: `make repro`, one α experiment, a queued α sweep.

    python benchmarks/bench_repro.py                  # clone this checkout to --work, then time the three
    python benchmarks/bench_repro.py --skip-sweep     # the first two only

Steps, in a fresh `git clone` of this repository (its own venv by `make setup`, not timed):
1. `make repro`, with the seconds of every stage (from the time each "Running stage" line appears);
2. commit the baseline as README says, then `dvc exp run -S alpha=0.1`: which stages ran and how long;
3. `dvc exp run --queue -S alpha=...` four times and `dvc queue start -j 2`: the sweep's wall time.
With `--repeats N` (default 3), steps 2 and 3 run N times, each time at α values not run before (so DVC's
run-cache restores nothing), and the figures are medians: one α experiment (~30 s) and one sweep (~80 s) each
move by 10-15 % between identical runs on a 2-core machine, as much as the sweep target's margin.

Prints, and appends to reports/bench_repro.md with the load average: the α experiment's training (its plan, train
and summarize stages) against the full training of step 1 (target <= 0.1), the whole α experiment against it, and
the sweep against one α experiment (target <= 2.5x, and below 4x: never slower than one after another).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_clip import append_section  # noqa: E402

STAGE = re.compile(r"Running stage '([^']+)'|Stage '([^']+)' (?:is cached|didn't change)")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_stages(cmd: list[str], cwd: Path, env: dict) -> tuple[float, dict[str, float], str]:
    """Run `cmd`, streaming its output; (wall seconds, seconds per stage that ran, output). A stage's seconds run
    from its "Running stage" line to the next stage line (or the end)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stages: dict[str, float] = {}
    current, since, lines = None, start, []
    for line in proc.stdout:
        lines.append(line)
        m = STAGE.search(line)
        if m:
            now = time.perf_counter()
            if current:
                stages[current] = stages.get(current, 0.0) + now - since
            current, since = (m.group(1), now) if m.group(1) else (None, now)
    proc.wait()
    end = time.perf_counter()
    if current:
        stages[current] = stages.get(current, 0.0) + end - since
    out = "".join(lines)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-4000:]}")
    return end - start, stages, out


# A queue worker's log line for an experiment it finished: when (celery's local time) and how long it took.
TASK_DONE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                       r"Task \S*run_exp\[[^\]]*\] succeeded in ([\d.]+)s")


def log_sizes(celery: Path) -> dict[Path, int]:
    """How much of each worker log exists now: `worker_tasks(celery, since=...)` then reads only what follows."""
    return {log: len(log.read_text(errors="replace")) for log in celery.glob("*.out")}


def worker_tasks(celery: Path, since: dict[Path, int] | None = None) -> list[tuple[float, float]]:
    """(finished at, as a Unix time; seconds) of each experiment the queue's workers ran, in order of finishing,
    from their logs in `celery` (`.dvc/tmp/exps/celery`); `since` skips what an earlier queue wrote."""
    tasks = []
    for log in celery.glob("*.out"):
        for stamp, seconds in TASK_DONE.findall(log.read_text(errors="replace")[(since or {}).get(log, 0):]):
            tasks.append((dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), float(seconds)))
    return sorted(tasks)


def start_workers(jobs: int, env: dict, root: Path) -> None:
    """`dvc queue start -j jobs`, returning as soon as it has started the workers.

    Its output goes to a file, never a pipe: the workers it forks keep its stdout and stderr open, so a pipe
    (`capture_output=True`) reaches its end only when the last worker exits, and `subprocess.run` waited that long.
    Before this, `make study` (bench_study) queued its first two points, then sat in `dvc queue start` until both
    workers had run them and stopped on the empty queue (3.5 min), queued the other 50 with no worker running, and
    restarted them: 85 and 47 s of the two workers' time idle (the 31f58ff and 5f556c8 runs, their celery logs)."""
    with tempfile.TemporaryFile() as out:
        res = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=root, env=env, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            out.seek(0)
            raise SystemExit(f"dvc queue start -j {jobs} failed (exit {res.returncode}):\n"
                             f"{out.read().decode(errors='replace')[-2000:]}")


TASK_END = re.compile(r"Task \S*run_exp\[[^\]]*\] (?:succeeded|raised)")
WORKER_END = re.compile(r"INFO/MainProcess\] done$", re.M)  # a worker's last line, however it stopped


def unclaimed_tasks(celery: Path) -> int:
    """Queued experiments no worker has taken yet: the task messages (not the workers' control messages) in the
    queue's filesystem broker."""
    inbox = celery / "broker/in"
    return sum(1 for f in inbox.iterdir() if ".pidbox." not in f.name) if inbox.is_dir() else 0


def wait_for_queue(repo: Path, env: dict, *, expected: int | None = None, since: dict[Path, int] | None = None,
                   check_s: float = 120.0, restart=None) -> str:
    """Block until `dvc queue status` shows nothing queued or running; returns that status.

    Each `dvc queue status` is a DVC process, about a second of CPU taken from the workers sharing the cores. So
    with `expected` (the number of tasks queued) the workers' logs are read every 2 s instead (file reads only),
    and DVC is asked once they show that many tasks ended (or every `check_s` seconds, in case a task ended
    without a line); without it, DVC is asked every 10 s.

    With `restart` (and `expected`), a worker that stops while tasks wait unclaimed is replaced by calling it:
    DVC's workers can die on a torn message of their filesystem broker ("Unrecoverable error: JSONDecodeError",
    treeverse/dvc#10428), which left one worker to run the last 6 points of a `make study` alone (2.7 min)."""
    celery = repo / ".dvc/tmp/exps/celery"
    asked = time.monotonic()
    stopped = 0
    while True:
        if expected is None:
            time.sleep(10)
        else:
            time.sleep(2)
            logs = [log.read_text(errors="replace")[(since or {}).get(log, 0):] for log in celery.glob("*.out")]
            ended = sum(len(TASK_END.findall(text)) for text in logs)
            if restart is not None:
                now = sum(len(WORKER_END.findall(text)) for text in logs)
                waiting = unclaimed_tasks(celery) if now > stopped and ended < expected else 0
                if waiting:
                    print(f"a queue worker stopped with {waiting} task(s) unclaimed: restarting it", flush=True)
                    restart()
                stopped = now
            if ended < expected and time.monotonic() - asked < check_s:
                continue
        asked = time.monotonic()
        status = subprocess.run(["dvc", "queue", "status"], cwd=repo, env=env, capture_output=True,
                                text=True).stdout
        if status and "Queued" not in status and "Running" not in status:  # "" = the call failed: ask again
            return status


# One α experiment per repeat, then one 4-point sweep per repeat: values never run before in the clone.
ALPHAS = ("0.1", "0.2", "0.05", "0.5", "0.02")
SWEEPS = (("0.001", "0.03", "0.3", "1.0"), ("0.002", "0.04", "0.4", "2.0"), ("0.003", "0.06", "0.6", "3.0"),
          ("0.004", "0.07", "0.7", "4.0"), ("0.006", "0.08", "0.8", "5.0"))


def each(values: list[float], digits: int = 0) -> str:
    """", median of 31, 35, 33 s" for more than one value, else nothing."""
    return "" if len(values) < 2 else f", median of {', '.join(f'{v:.{digits}f}' for v in values)} s"


def training(stages: dict[str, float]) -> float:
    return sum(s for name, s in stages.items() if name.split("@")[0] in ("plan", "train", "summarize"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmmreg-bench-repro"))
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, choices=range(1, len(ALPHAS) + 1),
                    help="α experiments and sweeps, each at new α values; the figures are their medians")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_repro.md")
    args = ap.parse_args()
    repo = args.work / "repo"
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "VIRTUAL_ENV", "LMMREG_"))}
    env.pop("PYTHONPATH", None)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    subprocess.run(["make", "setup"], cwd=repo, env=env, check=True, capture_output=True)
    env["PATH"] = f"{repo / '.venv/bin'}:{env['PATH']}"
    load0 = load()
    print(f"load average before: {load0}", flush=True)

    repro_s, stages, log = timed_stages(["make", "repro"], repo, env)
    (args.work / "make_repro.log").write_text(log)  # what a user sees: checked for third-party noise below
    if (repo / "reports/tables.md").is_file():  # the default's report, before the α experiment changes the workspace
        shutil.copy(repo / "reports/tables.md", args.work / "repro_tables.md")
    noise = [ln for ln in log.splitlines()  # MLflow's own lines: "2026/12/06 19:03:44 INFO mlflow.utils..."
             if " INFO root:" in ln or re.search(r" (INFO|WARNING) mlflow", ln) or "UserWarning" in ln]
    print(f"make repro: {repro_s:.0f} s", flush=True)
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {s:7.1f} s", flush=True)
    train_s = training(stages)
    print(f"  third-party INFO/warning lines in the log: {len(noise)}" + "".join(f"\n    {n}" for n in noise[:5]))

    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline run"]):
        subprocess.run(cmd, cwd=repo, env={**env, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
                                           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}, check=True)
    alphas, trains, ran = [], [], []
    for a in ALPHAS[:args.repeats]:
        secs, alpha_stages, _ = timed_stages(["dvc", "exp", "run", "-S", f"alpha={a}"], repo, env)
        alphas.append(secs)
        trains.append(training(alpha_stages))
        ran = ran or sorted(alpha_stages)
        print(f"dvc exp run -S alpha={a}: {secs:.0f} s (training {trains[-1]:.1f} s), ran {sorted(alpha_stages)}",
              flush=True)
    alpha_s, alpha_train = statistics.median(alphas), statistics.median(trains)
    print(f"  its training {alpha_train:.1f} s / full training {train_s:.1f} s = {alpha_train / train_s:.3f}"
          f" (target <= 0.1); whole experiment / full training = {alpha_s / train_s:.3f}", flush=True)

    sweep = ""
    if not args.skip_sweep:
        sweeps, oks = [], []
        for points in SWEEPS[:args.repeats]:
            subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, env=env, check=True)
            for a in points:
                subprocess.run(["dvc", "exp", "run", "--queue", "-S", f"alpha={a}"], cwd=repo, env=env, check=True,
                               capture_output=True)
            seen = log_sizes(repo / ".dvc/tmp/exps/celery")
            t, t_wall = time.perf_counter(), time.time()
            start_workers(2, env, repo)
            wait_for_queue(repo, env, expected=4, since=seen)
            # The sweep ends when the workers' last experiment does (their logs), not when a poll notices it.
            tasks = worker_tasks(repo / ".dvc/tmp/exps/celery", since=seen)
            sweeps.append(tasks[-1][0] - t_wall if tasks else time.perf_counter() - t)
            oks.append(len(tasks))  # this sweep's experiments that succeeded (their workers' logs since `seen`)
            print(f"4-point sweep at -j 2, alpha {points}: {sweeps[-1]:.0f} s ({oks[-1]}/4 succeeded)", flush=True)
        sweep_s, ok = statistics.median(sweeps), min(oks)
        print(f"4-point sweep at -j 2: {sweep_s:.0f} s = {sweep_s / alpha_s:.2f}x one α experiment "
              f"(target <= 2.5x; one after another would be ~4x)", flush=True)
        sweep = (f"| 4-point α sweep, `dvc queue start -j 2` ({ok}/4 succeeded){each(sweeps)} | {sweep_s:.0f} | "
                 f"{sweep_s / alpha_s:.2f}x one α experiment (target <= 2.5x; sequential ~4x) |\n")

    rows = "".join(f"| `{n}` | {s:.1f} |\n" for n, s in sorted(stages.items(), key=lambda kv: -kv[1]))
    text = (f"\n## {dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} ({os.cpu_count()} CPUs), "
            f"load average before {load0}, after {load()}\n\n"
            f"| measured | seconds | figure |\n|---|---|---|\n"
            f"| `make repro` from a clean clone (install excluded) | {repro_s:.0f} | target <= 600 |\n"
            f"| its training (plan, train, summarize stages) | {train_s:.0f} | |\n"
            f"| third-party INFO / MLflow warning lines in its log | {len(noise)} | target 0 |\n"
            f"| `dvc exp run -S alpha={'/'.join(ALPHAS[:len(alphas)])}`{each(alphas)} | {alpha_s:.0f} | "
            f"ran: {', '.join(ran)} |\n"
            f"| its training{each(trains, 1)} | {alpha_train:.1f} | {alpha_train / train_s:.3f} of the full training "
            f"(target <= 0.1); "
            f"the whole experiment {alpha_s / train_s:.3f} |\n{sweep}"
            f"\nStages of `make repro`:\n\n| stage | seconds |\n|---|---|\n{rows}")
    append_section(args.out, "# make repro, an α experiment and a queued sweep (benchmarks/bench_repro.py)\n", text)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

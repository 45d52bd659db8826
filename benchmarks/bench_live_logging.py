"""What live MLflow runs cost: the train stage with its epochs streamed every 2 s against the same stage writing them
only at the end (`LMMREG_MLFLOW_FLUSH_S=inf`, the old after-the-fact logging), alternated in one session.

    python benchmarks/bench_live_logging.py --project /tmp/lmmreg-bench-repro/repo --method finetune --repeats 2

`--project` is a checkout where `dvc repro` has run (bench_repro.py leaves one); each run is the real stage command
(`python -m lmmreg.stages.train ...` with that project's plan and caches) writing to a scratch output and the
project's MLflow store. Prints the ratio (target <= 1.05) and appends it to reports/bench_live_logging.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_clip import append_section  # noqa: E402


def run_stage(project: Path, method: str, flush: str, out: Path) -> float:
    cmd = [sys.executable, "-m", "lmmreg.stages.train", "--dataset", "demo", "--method", method,
           "--plan", f"data/plan/demo/{method}.json", "--manifest", "data/prepared/demo",
           "--features", "data/features/demo.pt", "--text", "data/text/demo", "--centroids", "data/centroids/demo.pt",
           "--out", str(out)]
    env = {**os.environ, "LMMREG_MLFLOW_FLUSH_S": flush, "DVC_ROOT": str(project),
           "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("/tmp/lmmreg-bench-repro/repo"))
    ap.add_argument("--method", default="finetune")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_live_logging.md")
    args = ap.parse_args()
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    times: dict[str, list[float]] = {"2": [], "inf": []}
    for i in range(args.repeats):
        for flush in ("inf", "2") if i % 2 else ("2", "inf"):  # alternate the order: drift hits both alike
            s = run_stage(args.project, args.method, flush, Path("/tmp") / f"bench_live_{flush}")
            times[flush].append(s)
            print(f"flush every {flush} s: {s:.1f} s", flush=True)
    live, after = statistics.median(times["2"]), statistics.median(times["inf"])
    print(f"live / at the end = {live / after:.3f} (target <= 1.05)")
    text = (f"\n## {dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} ({os.cpu_count()} CPUs), "
            f"load average before {load0}\n\n`train@demo-{args.method}` (the stage command, its seeds in parallel), "
            f"median of {args.repeats}: live (epochs written every 2 s) {live:.1f} s, at the end only {after:.1f} s: "
            f"**{live / after:.3f}x** (target <= 1.05). Runs: live {times['2']}, at the end {times['inf']}.\n")
    append_section(args.out, "# Live MLflow runs: what streaming the epochs costs (benchmarks/bench_live_logging.py)\n",
                   text)


if __name__ == "__main__":
    main()

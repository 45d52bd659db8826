"""How fast the paper's setting says what is missing: `python -m lmmreg doctor` and `dvc repro` (issue 19).

    python benchmarks/bench_preflight.py            # -> prints, and appends to reports/bench_preflight.md

In a scratch git + DVC repository holding the project's pipeline (tests/dvc_repo.make_repo, as a clone holds it)
with `configs/paper.yaml` as params.yaml and `datasets: [bar]`, a BAR tree in place (tests/data_fixtures), no
describer server (base_url on a closed port), no CLIP weights (empty caches, the hub's address a closed port, as
offline looks): times the doctor and `dvc repro`, keeps the first lines of what each says, and checks that neither
leaves a half-written output behind (targets: doctor non-zero within 30 s, `dvc repro` failing within 60 s, naming
the first thing missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.data_fixtures import build_bar_tree  # noqa: E402
from tests.dvc_repo import DVC, free_port, git_env, make_repo  # noqa: E402
from tests.test_doctor import paper_params  # noqa: E402

# Where a run may write without producing an output: DVC's and git's own state, the MLflow store made before the run.
OWN_STATE = (".dvc/", ".git/", "mlflow.db", "mlruns/", ".mlflow-uri")


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
            and not p.relative_to(root).as_posix().startswith(OWN_STATE)}


def by_folder(paths: list[str]) -> str:
    """New files summarised by their first two path parts: `data/prepared (4)`."""
    counts: dict[str, int] = {}
    for path in paths:
        key = "/".join(path.split("/")[:2])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items())) or "none"


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return time.monotonic() - t0, res.returncode, res.stdout + res.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmmreg-bench-preflight"))
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_preflight.md")
    args = ap.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    repo = args.work / "repo"
    port = free_port()
    raw = paper_params(describe={"options": {"base_url": f"http://127.0.0.1:{port}/v1", "concurrency": 64}})
    env = git_env(venv_on_path=False, HOME=str(args.work / "home"), HF_HUB_CACHE=str(args.work / "hf"),
                  HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "LMMREG_CLIP_CACHE", "DVC_ROOT",
                "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    make_repo(repo, params=raw, venv=True, env=env)
    build_bar_tree(repo / "data/raw/bar")
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())

    before = files(repo)
    doctor_s, doctor_rc, doctor_out = timed([str(repo / "bin/python"), "-m", "lmmreg", "doctor"], repo, env)
    doctor_left = sorted(files(repo) - before)
    before = files(repo)
    repro_s, repro_rc, repro_out = timed([DVC, "repro"], repo, env)
    repro_left = sorted(files(repo) - before)

    ran = [ln.split("'")[1] for ln in repro_out.splitlines() if ln.startswith("Running stage '")]
    errors = [ln for ln in repro_out.splitlines() if "ERROR" in ln or "Error" in ln][:3]
    missing = [ln for ln in doctor_out.splitlines() if ln.startswith("MISSING")]
    print(f"doctor: exit {doctor_rc} in {doctor_s:.1f} s (target: non-zero within 30 s); new files: "
          f"{by_folder(doctor_left)}")
    print("\n".join(f"  {ln}" for ln in missing))
    print(f"dvc repro: exit {repro_rc} in {repro_s:.1f} s (target: fails within 60 s); stages run: {ran}; "
          f"new files (the outputs of the stages that completed): {by_folder(repro_left)}")
    print("\n".join(f"  {ln}" for ln in errors))

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")[:400]

    section = (f"\n## {dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} ({os.cpu_count()} CPUs), "
               f"load average before {load0}\n\n"
               "configs/paper.yaml, `datasets: [bar]`, BAR in place, no describer server, no CLIP weights, offline.\n\n"
               "| command | exit | seconds | target | new files (by folder) | what it said first |\n"
               "|---|---|---|---|---|---|\n"
               f"| `python -m lmmreg doctor` | {doctor_rc} | {doctor_s:.1f} | non-zero within 30 s | "
               f"{by_folder(doctor_left)} | {cell('; '.join(missing))} |\n"
               f"| `dvc repro` | {repro_rc} | {repro_s:.1f} | fails within 60 s | {by_folder(repro_left)} | "
               f"{cell('; '.join(errors))} (stages run: {', '.join(ran)}) |\n")
    header = "# Preflight benchmark\n\nWritten by `benchmarks/bench_preflight.py`.\n"
    old = args.out.read_text() if args.out.is_file() else header
    args.out.write_text(old.rstrip("\n") + "\n" + section)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

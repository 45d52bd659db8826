"""What a user reads after an experiment, with the real `dvc` on a scratch project: the README's comparison command
fits a 120-column terminal (the experiment, what it changed, LMM-Reg.'s, fine-tuning's and the best baseline's test
accuracy, no cell cut to "…"), and `dvc plots show` writes a page that loads no script from the internet."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import time
from pathlib import Path

import pytest

from tests.dvc_repo import DVC, dvc_params, make_repo, run

pytestmark = pytest.mark.slow

# The README's comparison command. --only-changed: the params and metrics that differ between the rows; --keep: the
# headline of metrics/<ds>.json (`<ds>.lmm_reg`, `<ds>.finetune`, `<ds>.best_baseline`, `<ds>.best_is`) even where
# it did not change; --drop: the run date, the per-method numbers (`<ds>.test_acc.*`, `<ds>.test_acc_std.*`) and
# the dependency hashes (paths, and the report's `metrics` folder).
COMPARE = ["exp", "show", "--only-changed", "--keep", r"[^.]+\.(lmm_reg|finetune|best)",
           "--drop", r"Created|metrics|.*/|.*test_acc"]
METHODS = ["zero_shot", "linear_probe", "finetune", "lmm_reg"]


def in_terminal(cmd: list[str], cwd: Path, env: dict, *, columns: int = 120, timeout: float = 300) -> str:
    """Run `cmd` in a pseudo-terminal `columns` wide (DVC's pager included, as a user sees it); the screen's text."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of that size, then the command
        os.chdir(cwd)
        os.execve(cmd[0], cmd, {**env, "COLUMNS": str(columns), "LINES": "60", "TERM": "xterm"})
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    out, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif os.waitpid(pid, os.WNOHANG)[0]:
                break
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>()][0-9A-Za-z]?", "", out.decode(errors="replace"))
    return text.replace("\r", "")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[Path, dict, str]:
    """A committed baseline run, then `dvc exp run -S alpha=0.1`, as the README has the user do."""
    repo = tmp_path_factory.mktemp("compare") / "repo"
    params = dvc_params()
    params["train"]["methods"] = METHODS
    env = make_repo(repo, params=params)
    run([DVC, "repro"], repo, env, timeout=1800)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    run([DVC, "exp", "run", "-S", "alpha=0.1"], repo, env, timeout=1800)
    (name,) = run([DVC, "exp", "list", "--name-only"], repo, env).split()
    return repo, env, name


def _cells(line: str) -> list[str]:
    return [c for c in re.split(r"\s{2,}", line.strip()) if c]


def test_the_comparison_command_fits_120_columns(experiment):
    repo, env, name = experiment
    screen = in_terminal([DVC, *COMPARE], repo, env)
    lines = [ln.rstrip() for ln in screen.splitlines() if ln.strip()]
    print("\n".join(lines))  # the table as the README shows it (pytest -s)
    assert "…" not in screen and all(len(ln) <= 120 for ln in lines), screen
    (header,) = [ln for ln in lines if ln.lstrip().startswith("Experiment")]
    columns = _cells(header)
    assert columns[:1] == ["Experiment"] and "alpha" in columns, columns
    assert {"demo.lmm_reg", "demo.finetune", "demo.best_baseline", "demo.best_is"} <= set(columns), columns
    assert not [c for c in columns if "/" in c or "test_acc" in c or c == "Created"], columns
    (row,) = [ln for ln in lines if f"[{name}]" in ln]
    (main,) = [ln for ln in lines if _cells(ln)[:1] == ["main"]]
    got, base = dict(zip(columns, _cells(row), strict=True)), dict(zip(columns, _cells(main), strict=True))
    assert got["alpha"] == "0.1" and base["alpha"] == "0.01"
    metrics = json.loads((repo / "metrics/demo.json").read_text())["demo"]  # the experiment's, in the workspace
    for m in ("lmm_reg", "finetune", "best_baseline"):
        assert float(got[f"demo.{m}"]) == pytest.approx(metrics[m], abs=0.01), (m, row)
    assert got["demo.best_is"] == metrics["best_is"] in ("zero_shot", "linear_probe")
    assert got["demo.finetune"] == base["demo.finetune"]  # α does not touch fine-tuning (α = 0)


def test_plots_show_loads_no_script_from_the_internet(experiment):
    repo, env, _ = experiment
    run([DVC, "plots", "show", "-o", "plots_html"], repo, env)
    page = (repo / "plots_html" / "index.html").read_text()
    assert "vegaEmbed(" in page and "plots/demo.csv" in page  # DVC filled the project's page with the plot
    assert not re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//", page, flags=re.IGNORECASE)
    assert "cdn.jsdelivr.net" not in page

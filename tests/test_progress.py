import logging

from tqdm import tqdm

from lmmreg import progress as progress_mod
from lmmreg.progress import LogProgress, progress


def test_in_a_log_a_bar_is_a_few_plain_lines(caplog, monkeypatch):
    monkeypatch.setattr(progress_mod, "is_terminal", lambda stream=None: False)
    caplog.set_level(logging.INFO, logger="lmmreg.progress")
    bar = progress(range(100), desc="train demo lmm_reg s0", unit="epoch", leave=False, every=3600)
    assert isinstance(bar, LogProgress)
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # no update reached the 1 h interval: only the closing line
    assert lines[0].startswith("train demo lmm_reg s0: done, 100/100 epoch") and "loss=0.010" in lines[0]
    assert "\r" not in lines[0]


def test_a_line_every_interval(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="lmmreg.progress")
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    bar = LogProgress(total=10, desc="features", unit="img", every=3)  # start at t=0, each update 1 s later
    for _ in range(10):
        bar.update(1)
    bar.close()
    bar.close()  # closing twice writes once
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(": ")[1].split(" img")[0] for line in lines] == ["3/10", "6/10", "9/10", "done, 10/10"]


def test_on_a_terminal_it_is_tqdm(monkeypatch):
    monkeypatch.setattr(progress_mod, "is_terminal", lambda stream=None: True)
    bar = progress(total=3, desc="x", unit="img", dynamic_ncols=True)
    try:
        assert isinstance(bar, tqdm) and bar.total == 3
    finally:
        bar.close()

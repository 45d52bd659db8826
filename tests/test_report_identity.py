"""The report's output for a fixed snapshot is byte-identical to the committed fixture (tests/fixtures/
report_before, written by `python -m tests.report_snapshot_fixture`): refactors of lmmreg.report change no byte;
a deliberate change of the output regenerates the fixture in its own commit."""

from __future__ import annotations

import json

from tests.report_snapshot_fixture import FIXTURE, TEXT_FILES, build_outputs, output_digest


def test_report_output_is_byte_identical_to_the_fixture(tmp_path):
    out = tmp_path / "out"
    build_outputs(out)
    for name in TEXT_FILES:
        assert (out / name).read_text() == (FIXTURE / name.replace("/", "__")).read_text(), name
    assert output_digest(out) == json.loads((FIXTURE / "digest.json").read_text())

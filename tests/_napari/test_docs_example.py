"""The runnable example of docs/scripting.md runs and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import gui, needs_trained

DOC = Path(__file__).resolve().parents[2] / "docs" / "scripting.md"


@gui
@needs_trained
def test_scripting_example_runs(tmp_path, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    example = blocks[-1]
    assert "SamWidget(viewer)" in example
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(DOC), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert "committed 1001" in out
    assert "saved classes: {1: 'nucleus', 2: 'other'}" in out
    assert (tmp_path / "nuclei_labels.tif").is_file()

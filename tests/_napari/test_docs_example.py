"""The runnable example of docs/scripting.md runs and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

from gui_helpers import TEST_MODEL, gui, needs_trained

DOC = Path(__file__).resolve().parents[2] / "docs" / "scripting.md"


@gui
@needs_trained
def test_scripting_example_runs(tmp_path, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    example = blocks[-1]
    assert "SamWidget(viewer)" in example
    if TEST_MODEL:
        example = example.replace('"tiny-synth"', repr(TEST_MODEL))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    try:
        exec(compile(example, str(DOC), "exec"), namespace)
    except BaseException:  # a failing example must not leave its viewer (and widget) behind
        if "widget" in namespace:
            namespace["widget"].close_session()
        if "viewer" in namespace:
            namespace["viewer"].close()
        raise
    out = capsys.readouterr().out
    assert "committed 1001" in out
    assert "saved classes: {1: 'nucleus', 2: 'other'}" in out
    assert (tmp_path / "nuclei_labels.tif").is_file()

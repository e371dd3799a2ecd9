"""The benchmark scripts the README's figures come from still run (slow: fresh processes)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_coding_speed_reports_wall_and_cpu_time(tmp_path: Path, tiny_model: Path, photo: np.ndarray, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo).save(folder / "a.png")
    rows = tmp_path / "rows.json"
    assert _script("coding_speed").main([str(folder), "--model", str(tiny_model), "--tau", "2", "--threads", "1",
                                         "--json", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "| 2 | nlic |" in out and "| 2 | jpegls |" in out
    (row,) = json.loads(rows.read_text())
    assert row["decode_error"] <= 2 and row["pixels"] == photo.shape[0] * photo.shape[1]
    # CPU seconds of one-thread processes: about their wall time at most (a library's helper thread aside)
    for part in ("encode", "decode"):
        assert 0 < row[f"{part}_cpu_s"] <= 1.5 * row[f"{part}_s"] + 0.1

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


def test_split_held_out_copies_the_configured_photos_and_overwrites_nothing(tmp_path: Path, capsys) -> None:
    split = _script("split_held_out")
    stems = split.held_out_stems()
    assert len(stems) == 10 and "gcompris_heron" in stems  # the list the default model's training held out
    source = tmp_path / "train"
    source.mkdir()
    for i, stem in enumerate([*stems, "digikam_lake_hill", "budgie_colosseum"]):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(source / f"{stem}.png")
    (source / "README.md").write_text("not a photo")
    held_out, rest = tmp_path / "held_out", tmp_path / "rest"
    assert split.main([str(source), str(held_out), "--rest", str(rest)]) == 0
    assert sorted(f.stem for f in held_out.iterdir()) == sorted(stems)
    assert sorted(f.name for f in rest.iterdir()) == ["budgie_colosseum.png", "digikam_lake_hill.png"]
    assert (held_out / "gcompris_heron.png").read_bytes() == (source / "gcompris_heron.png").read_bytes()
    # a second run into the same folders refuses and leaves them as they are
    with pytest.raises(SystemExit, match="not an empty folder"):
        split.main([str(source), str(held_out)])
    assert len(list(held_out.iterdir())) == 10
    # a source without every held-out photo is refused with the names it lacks
    (source / "gcompris_heron.png").unlink()
    assert split.main([str(source), str(tmp_path / "other")]) == 2
    assert "gcompris_heron" in capsys.readouterr().err and not (tmp_path / "other").exists()
    assert split.main([str(tmp_path / "missing"), str(tmp_path / "other")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "other").exists()

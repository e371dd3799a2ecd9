"""The re-encoding study driven by a versioned sweep file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from nlic.cli.main import main as nlic_main


def test_reencode_sweep_file_runs_every_setting(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    img = tmp_path / "img.png"
    Image.fromarray(photos["chelsea"]).save(img)
    sweep = tmp_path / "study.yaml"
    sweep.write_text(
        "sweep_name: study\ngenerations: 2\ncodecs: [jpeg, jpegxl]\n"
        "settings:\n  - {jpeg: 90, jpegxl: 1.0}\n  - {jpeg: 50, jpegxl: 3.0}\n"
    )
    assert nlic_main(["reencode", str(img), "--sweep", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rates = []
    for i in (0, 1):
        rows = list(csv.DictReader(open(tmp_path / "out" / str(i) / "reencode.csv")))
        assert {r["codec"] for r in rows} == {"jpeg", "jpegxl"}
        assert (tmp_path / "out" / str(i) / "reencode_psnr.png").stat().st_size > 0
        rates.append(np.mean([float(r["bpp"]) for r in rows if r["codec"] == "jpeg"]))
    assert rates[0] > rates[1]  # quality 90 costs more than quality 50

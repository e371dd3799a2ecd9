"""``nlic rd``: rate-distortion points by real coding (flow model file at several steps, JPEG, JPEG-XL)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nlic.cli.main import main

TINY_FLOW = {
    "_target_": "nlic.codecs.flow.FlowCodec", "steps_per_level": [1, 1, 1, 1], "hidden_channels": [8, 8, 8, 8],
    "hyper_channels": 16, "feature_channels": 1, "feature_hidden": 8, "delta": 0.03,
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> Path:
    folder = tmp_path_factory.mktemp("rd_images")
    for name in ("astronaut", "chelsea"):
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hydra.utils import instantiate

    from nlic.eval.lossy import save_lossy_model

    torch.manual_seed(0)  # untrained: the orthogonal flow at init still orders rate and quality by delta
    model = instantiate(TINY_FLOW).eval()
    path = tmp_path_factory.mktemp("flow") / "lossy_model.pt"
    save_lossy_model(model, {"lossy": TINY_FLOW}, path)
    return path


def _points(out: Path) -> list[dict]:
    with (out / "rd.csv").open() as f:
        return list(csv.DictReader(f))


def test_rd_measures_every_codec_and_setting(tmp_path, image_dir, flow_file) -> None:
    out = tmp_path / "rd"
    code = main(["rd", str(image_dir), "--model", f"flow={flow_file}", "--points", "flow=0.1,0.03,0.01",
                 "--points", "jpeg=30,90", "--points", "jpegxl=4,0.5", "--out", str(out), "--quiet"])
    assert code == 0
    pts = _points(out)
    by_codec: dict[str, list[dict]] = {}
    for p in pts:
        by_codec.setdefault(p["codec"], []).append(p)
    assert {k: len(v) for k, v in by_codec.items()} == {"jpeg": 2, "jpegxl": 2, "flow": 3}
    assert all(int(p["images"]) == 2 for p in pts)
    for codec in ("jpeg", "jpegxl", "flow"):  # listed from low to high quality: rate and PSNR both rise
        bpp = [float(p["bpp"]) for p in by_codec[codec]]
        db = [float(p["psnr"]) for p in by_codec[codec]]
        assert bpp == sorted(bpp) and len(set(bpp)) == len(bpp), (codec, bpp)
        assert db == sorted(db) and all(math.isfinite(v) for v in db), (codec, db)
    with (out / "rd_images.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 * 2 and {r["image"] for r in rows} == {"astronaut", "chelsea"}
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| flow | delta=0.01 | 2 |" in (out / "rd.md").read_text()


def test_rd_bpp_counts_real_bytes(tmp_path, image_dir) -> None:
    import io

    out = tmp_path / "rd"
    assert main(["rd", str(image_dir / "chelsea.png"), "--codecs", "jpeg", "--points", "jpeg=75",
                 "--out", str(out), "--quiet"]) == 0
    img = np.asarray(Image.open(image_dir / "chelsea.png").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=75)
    expected = 8 * len(buf.getvalue()) / (img.shape[0] * img.shape[1])
    assert float(_points(out)[0]["bpp"]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codecs", "png"], "not a classic codec"),
        (["--codecs", ""], "nothing to measure"),
        (["--points", "jpeg=a,b"], "not a list of numbers"),
        (["--points", "flow=0.1"], "not measured"),
        (["--model", "flow"], "CODEC=FILE"),
    ],
)
def test_rd_bad_arguments_are_one_line_errors(tmp_path, image_dir, capsys, args, message) -> None:
    code = main(["rd", str(image_dir), "--out", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and "\n" not in err and "Traceback" not in err


def test_rd_missing_model_file_is_an_error(tmp_path, image_dir, capsys) -> None:
    code = main(["rd", str(image_dir), "--model", f"flow={tmp_path / 'none.pt'}", "--quiet"])
    assert code != 0 and "not found" in capsys.readouterr().err

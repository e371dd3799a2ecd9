"""``nlic bench``: classic codec round trips, bound verification, results files, the command."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from skimage import data

import nlic
from nlic.bench import codecs as bench_codecs
from nlic.bench import report, runner
from nlic.bench.codecs import CODECS, Codec, CodecOptions, Setting
from nlic.cli.main import main
from nlic.errors import NlicError

ROW_KEYS = {
    "codec", "tau", "image", "width", "height", "bytes", "bpp", "psnr", "max_err", "enc_s", "dec_s",
    "bound_ok", "distance", "error",
}  # fmt: skip
CLASSIC = ["png", "webp", "jpegxl", "jpeg2000", "jpegls"]


def _crop(image: np.ndarray, size: int = 128) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two real 128x128 photos (scikit-image's bundled astronaut and chelsea) as PNG files."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("astronaut", "chelsea"):
        Image.fromarray(_crop(getattr(data, name)())).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def coffee_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("coffee") / "coffee.png"
    Image.fromarray(_crop(data.coffee())).save(path)
    return path


class OffByOne(Codec):
    """A deliberately broken codec: one sample is off by tau + 1 after decoding."""

    name = "broken"
    label = "broken (test)"
    max_tau = None

    def encode(self, image: np.ndarray) -> bytes:
        out = image.copy()
        v = int(out[5, 7, 1])
        out[5, 7, 1] = v + self.tau + 1 if v + self.tau + 1 <= 255 else v - self.tau - 1
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="PNG")
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return imagecodecs.png_decode(data)


class Crashing(OffByOne):
    name = "crashing"

    def encode(self, image: np.ndarray) -> bytes:
        raise RuntimeError("boom")


@pytest.fixture
def fake_codecs(monkeypatch):
    monkeypatch.setitem(CODECS, "broken", OffByOne)
    monkeypatch.setitem(CODECS, "crashing", Crashing)


@pytest.mark.parametrize("codec", CLASSIC)
def test_classic_codec_round_trip(codec, coffee_png):
    options = CodecOptions(jxl_effort=3)
    tasks, _ = runner.plan([coffee_png], [codec], [0, 1, 2, 3], None, options)
    assert [t.setting.tau for t in tasks] == ([0, 1, 2, 3] if codec == "jpegls" else [0])
    rows = runner.run_bench(tasks, options)
    assert len(rows) == len(tasks)
    for row in rows:
        assert row.error is None and row.bound_ok is True
        assert row.max_err <= row.tau
        assert (row.max_err == 0) == (row.psnr == float("inf"))
        assert row.bpp == pytest.approx(8 * row.bytes / (128 * 128))
    assert rows[0].max_err == 0
    if codec == "jpegls":  # near-lossless really uses its budget and saves bits
        assert [r.max_err for r in rows] == [0, 1, 2, 3]
        assert all(a.bytes > b.bytes for a, b in zip(rows, rows[1:]))


def test_jpegxl_lossy_is_unbounded(coffee_png):
    tasks, _ = runner.plan([coffee_png], ["jpegxl-lossy"], [0, 1], [0.5], CodecOptions(jxl_effort=3))
    (row,) = runner.run_bench(tasks, CodecOptions(jxl_effort=3))
    assert (row.tau, row.distance, row.bound_ok, row.error) == (None, 0.5, None, None)
    assert row.max_err > 0 and 30 < row.psnr < 60
    (summary,) = report.summarize([row])
    assert summary.status == "no bound" and "Unbounded reference" in report.markdown([summary])


def test_bound_violation_is_flagged(image_dir, tmp_path, fake_codecs):
    images, _ = runner.find_images(image_dir)
    tasks, _ = runner.plan(images, ["png", "broken", "crashing"], [0, 2], None, CodecOptions())
    rows = runner.run_bench(tasks, CodecOptions())
    broken = [r for r in rows if r.codec == "broken"]
    assert len(broken) == 4 and all(r.bound_ok is False for r in broken)
    assert sorted({r.max_err - r.tau for r in broken}) == [1]
    png = [r for r in rows if r.codec == "png"]
    assert len(png) == 2 and all(r.bound_ok is True for r in png)  # lossless only: tau 0 of 2 images
    crashing = [r for r in rows if r.codec == "crashing"]
    assert len(crashing) == 4 and all(r.error == "RuntimeError: boom" and r.bound_ok is None for r in crashing)

    summary = report.summarize(rows)
    status = {(s.codec, s.tau): s.status for s in summary}
    assert status[("broken", 2)] == "BOUND VIOLATED (2/2)"
    assert status[("crashing", 0)] == "FAILED (2/2)" and status[("png", 0)] == "ok"
    report.write_reports(summary, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "🔴 **BOUND VIOLATED (2/2)**" in md and "🔴 **BOUND VIOLATED**: broken (test) at tau=2" in md


def test_results_json_schema(image_dir, tmp_path):
    images, _ = runner.find_images(image_dir)
    tasks, _ = runner.plan(images, ["jpegls"], [0, 1], None, CodecOptions())
    runner.write_results_json(runner.run_bench(tasks, CodecOptions()), tmp_path / "results.json")
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 4 and all(set(r) == ROW_KEYS for r in rows)
    assert [(r["tau"], r["image"]) for r in rows] == [
        (0, "astronaut.png"), (0, "chelsea.png"), (1, "astronaut.png"), (1, "chelsea.png"),
    ]  # fmt: skip
    for r in rows:
        assert (r["codec"], r["width"], r["height"], r["bound_ok"]) == ("jpegls", 128, 128, True)
        assert isinstance(r["bytes"], int) and r["bpp"] == pytest.approx(8 * r["bytes"] / 128**2)
        assert r["enc_s"] > 0 and r["dec_s"] > 0 and r["distance"] is None and r["error"] is None
        # exact reconstructions: psnr null (infinite); otherwise a finite number of dB
        assert (r["psnr"] is None) == (r["tau"] == 0) and r["max_err"] == r["tau"]


def test_command_two_images_parallel(image_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", str(image_dir), "--codecs", "png,jpegls,jpegxl-lossy", "--tau", "0-2"]
    argv += ["--jxl-distances", "0.5,1", "--jxl-effort", "3", "--out", str(out), "--jobs", "2"]
    assert main(argv) == 0
    for name in ("results.json", "results.md", "bpp_vs_tau.png", "psnr_vs_bpp.png"):
        assert (out / name).stat().st_size > 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 * (1 + 3 + 2) and all(r["bound_ok"] is not False for r in rows)
    doc = json.loads((out / "compressai_jpegls.json").read_text())
    assert doc["name"] == "jpegls" and doc["results"]["tau"] == [2, 1, 0]
    assert doc["results"]["bpp"] == sorted(doc["results"]["bpp"]) and doc["results"]["psnr-rgb"][-1] is None
    captured = capsys.readouterr()
    assert "done in" in captured.out and str(out) in captured.out
    assert "[12/12] " in captured.err  # not a terminal: one line per coded image instead of a bar


def test_command_reports_violation(image_dir, tmp_path, capsys, fake_codecs):
    out = tmp_path / "bench"
    assert main(["bench", str(image_dir), "--codecs", "broken", "--tau", "1", "--out", str(out)]) == 1
    assert "BOUND VIOLATED: broken tau=1 astronaut.png max error 2" in capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 and all(r["bound_ok"] is False for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codecs", "png,gif"], "unknown codec 'gif'"),
        (["--tau", "1,x"], "bad --tau"),
        (["--tau", "-1"], "bad --tau"),
        (["--tau", ","], "bad --tau"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_command_bad_arguments(args, message, image_dir, tmp_path, capsys):
    assert main(["bench", str(image_dir), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_command_bad_folders(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing"), "--codecs", "png"]) == 2
    assert "image folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty"), "--codecs", "png"]) == 2
    assert "no readable images" in capsys.readouterr().err


def test_command_skips_non_images(coffee_png, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "coffee.png").write_bytes(coffee_png.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_bytes(b"not a png either")
    out = tmp_path / "out"
    assert main(["bench", str(folder), "--codecs", "jpegls", "--tau", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipping notes.txt" in err and "skipping fake.png" in err
    assert [r["image"] for r in json.loads((out / "results.json").read_text())] == ["coffee.png"]


def test_parse_taus():
    from nlic.cli.commands.bench import parse_taus

    assert parse_taus("0-3,5,2") == [0, 1, 2, 3, 5]
    with pytest.raises(NlicError):
        parse_taus("300")


def test_nlic_unavailable_is_a_clean_error(image_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nlic.api", None)  # import fails as if the model stack broke
    monkeypatch.setattr(bench_codecs, "_NLIC_MODELS", {})
    with pytest.raises(NlicError, match="codec 'nlic' is unavailable"):
        runner.plan(runner.find_images(image_dir)[0], ["png", "nlic"], [0], None, CodecOptions())


def test_nlic_codec_round_trip(coffee_png):
    """The learned codec through the bench (model: $NLIC_TEST_MODEL, else the shipped default)."""
    model = os.environ.get("NLIC_TEST_MODEL")
    default = Path(nlic.__file__).parent / "assets" / "default_model.pt"  # checked before importing
    if model is None and not default.exists():  # torch: skip cheaply when there is nothing to test
        pytest.skip(f"no model: set NLIC_TEST_MODEL or ship {default}")
    pytest.importorskip("nlic.api", reason="nlic.api (the learned codec) does not import")
    options = CodecOptions(model=model)
    tasks, _ = runner.plan([coffee_png], ["nlic"], [0, 2], None, options)
    rows = runner.run_bench(tasks, options)
    assert len(rows) == 2
    for row in rows:
        assert row.error is None, row.error
        assert row.bound_ok is True and row.max_err <= row.tau


def test_bench_says_when_a_model_has_no_grey_heads(tiny_model, monkeypatch, capsys):
    """A colour-only checkpoint benched as is codes R without the grey heads the shipped model will
    have: the bench says so once per model; the shipped default (with grey heads) draws no note."""
    pytest.importorskip("nlic.api", reason="nlic.api (the learned codec) does not import")
    monkeypatch.setattr(bench_codecs, "_NLIC_MODELS", {})
    for learned_only in (False, True):
        bench_codecs._load_nlic(str(tiny_model), learned_only)
    assert capsys.readouterr().err.count("has no grey heads") == 1
    bench_codecs._load_nlic(None)
    assert "grey heads" not in capsys.readouterr().err


@pytest.mark.slow
def test_nlic_random_model_round_trip(tmp_path):
    """The nlic adapter on a tiny untrained model: the bound must hold whatever the weights."""
    pytest.importorskip("nlic.api", reason="nlic.api (the learned codec) does not import")
    import torch
    import yaml

    from nlic.model_io import build_codec, save_model

    conf = Path(__file__).parents[1] / "conf"
    lossy = yaml.safe_load((conf / "lossy" / "factorized.yaml").read_text())
    residual = yaml.safe_load((conf / "residual" / "default.yaml").read_text())
    lossy.update(N=16, M=16, feature_channels=8)
    residual.update(feature_channels=8, bias_correction=False, hidden=16, context_channels=8, mixtures=2)
    config = {"lossy": lossy, "residual": residual}
    torch.manual_seed(0)
    save_model(build_codec(config), config, tmp_path / "tiny.pt")
    Image.fromarray(_crop(data.coffee(), 48)).save(tmp_path / "coffee.png")
    options = CodecOptions(model=str(tmp_path / "tiny.pt"))
    tasks, _ = runner.plan([tmp_path / "coffee.png"], ["nlic"], [0, 3], None, options)
    rows = runner.run_bench(tasks, options)
    assert len(rows) == 2
    for row in rows:
        assert row.error is None, row.error
        assert row.bound_ok is True and row.max_err <= row.tau


def test_setting_labels():
    assert Setting(tau=3).label() == "tau=3" and Setting(tau=None, distance=0.5).label() == "d=0.5"


def test_bench_default_codecs_are_the_registered_ones() -> None:
    from nlic.bench.codecs import CODECS
    from nlic.cli.commands.bench import DEFAULT_CODECS

    assert DEFAULT_CODECS.split(",") == list(CODECS)

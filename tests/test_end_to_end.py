"""Real coding end to end: API, files decoded by a fresh process, CLI, training, W&B files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlic.api import load_codec
from nlic.cli.main import main as nlic_main
from nlic.errors import BitstreamError


def max_err(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("tile", [512, 64])
def test_api_round_trip_every_tau(tiny_model: Path, photo: np.ndarray, tile: int) -> None:
    codec = load_codec(tiny_model, tile=tile, stored_fallback=False)  # the learned path, untrained model
    for tau in range(6):
        data = codec.compress(photo, tau).data
        rec = codec.decompress(data).pixels
        assert rec.shape == photo.shape and rec.dtype == np.uint8
        if tau == 0:
            assert np.array_equal(rec, photo)
        else:
            assert max_err(rec, photo) <= tau
            assert max_err(rec, photo) > 0  # tau > 0 is really used


def test_warm_up_codes_a_crop_and_leaves_the_files_unchanged(tiny_model: Path, photo: np.ndarray) -> None:
    """``Codec.warm_up`` (run before timing by the evaluation and the bench) codes colour and grey
    photos without a trace: the files made after it are the bytes a codec that never warmed up makes."""
    grey = np.ascontiguousarray(photo[..., 1])
    cold = load_codec(tiny_model)
    expected = {(tau, image.ndim): cold.compress(image, tau).data for tau in (0, 2) for image in (photo, grey)}
    warm = load_codec(tiny_model)
    for image in (photo, grey):
        assert warm.warm_up(image, (0, 2)) > 0
    for (tau, ndim), data in expected.items():
        assert warm.compress(photo if ndim == 3 else grey, tau).data == data


def test_read_only_images_code_without_warnings(tiny_model: Path, photo: np.ndarray) -> None:
    """``np.asarray`` of a PIL image is read-only: the API codes it (colour and grey) as it is,
    without torch's warning about non-writable arrays, and leaves it untouched."""
    import warnings

    codec = load_codec(tiny_model)
    for image in (photo, np.ascontiguousarray(photo[..., 1])):
        frozen = image.copy()
        frozen.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            data = codec.compress(frozen, 0).data
        assert np.array_equal(codec.decompress(data).pixels.reshape(image.shape), image)
        assert np.array_equal(frozen, image)


def test_files_decode_in_a_fresh_process(tiny_model: Path, photo: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    Image.fromarray(photo).save(src)
    enc = (
        "import sys; from nlic.cli.main import main\n"
        "for t in range(6):\n"
        "    args = ['compress', sys.argv[1], f'{sys.argv[2]}/t{t}.nlic', '--tau', str(t), '--model', sys.argv[3]]\n"
        "    assert main(args) == 0\n"
    )
    dec = (
        "import sys; from nlic.cli.main import main\n"
        "for t in range(6):\n"
        "    args = ['decompress', f'{sys.argv[1]}/t{t}.nlic', f'{sys.argv[1]}/t{t}.png', '--model', sys.argv[2]]\n"
        "    assert main(args) == 0\n"
    )
    subprocess.run([sys.executable, "-c", enc, str(src), str(tmp_path), str(tiny_model)], check=True)
    subprocess.run([sys.executable, "-c", dec, str(tmp_path), str(tiny_model)], check=True)
    for t in range(6):
        rec = np.asarray(Image.open(tmp_path / f"t{t}.png"))
        assert rec.shape == photo.shape
        assert max_err(rec, photo) <= t
        if t == 0:
            assert np.array_equal(rec, photo)


def test_adapt_encodes_a_decodable_file(tiny_model: Path, photo: np.ndarray, tmp_path: Path) -> None:
    from nlic.cli.main import main

    src = tmp_path / "photo.png"
    Image.fromarray(photo).save(src)
    assert main(["compress", str(src), str(tmp_path / "a.nlic"), "--tau", "1", "--model", str(tiny_model),
                 "--adapt", "--learned-only"]) == 0
    assert main(["decompress", str(tmp_path / "a.nlic"), str(tmp_path / "a.png"), "--model", str(tiny_model)]) == 0
    assert max_err(np.asarray(Image.open(tmp_path / "a.png")), photo) <= 1


def test_console_scripts_and_info(tiny_model: Path, photo: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    nl = tmp_path / "x.nlic"
    out = tmp_path / "x.png"
    subprocess.run(["nlic", "compress", str(src), str(nl), "--tau", "2", "--model", str(tiny_model), "--learned-only"],
                   check=True)
    res = subprocess.run(["nlic", "info", str(nl), "--json"], check=True, capture_output=True, text=True)
    info = json.loads(res.stdout)
    assert (info["width"], info["height"], info["tau"], info["mode"]) == (131, 67, 2, "RGB")
    assert info["bytes"]["total"] == nl.stat().st_size
    assert info["bytes"]["latents"] > 0 and info["bytes"]["residual"] > 0
    # the plain listing names the kinds the tiles took, not every kind there is
    taken = {f"tiles.{kind}" for kind, count in info["tile_kinds"].items() if count}
    res = subprocess.run(["nlic", "info", str(nl)], check=True, capture_output=True, text=True)
    listed = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()}
    assert {key for key in listed if key.startswith("tiles.")} == taken and taken
    assert listed["bytes.total"] == str(nl.stat().st_size)
    subprocess.run(["nlic", "decompress", str(nl), str(out), "--model", str(tiny_model)], check=True)
    assert max_err(np.asarray(Image.open(out)), photo) <= 2


def test_decoding_process_leaves_scipy_linalg_unimported(photo: np.ndarray, tmp_path: Path) -> None:
    """numba's first compiled call would import scipy.linalg (0.1-0.2 s of every fresh process) to
    probe BLAS for kernels nlic never calls (see nlic.compiled); the default model's stack (no
    CompressAI layer) imports it nowhere else."""
    nl = tmp_path / "x.nlic"
    nl.write_bytes(load_codec(None).compress(photo, 1).data)
    script = ("import sys; from nlic.api import load_codec; "
              f"load_codec(None).decompress(open({str(nl)!r}, 'rb').read()); "
              "print('scipy.linalg' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert res.stdout.strip() == "False"


def test_other_model_and_corruption_are_refused(tiny_model: Path, photo: np.ndarray, tmp_path: Path) -> None:
    from tests.conftest import make_tiny_model

    data = load_codec(tiny_model).compress(photo, 1).data
    other = load_codec(make_tiny_model(tmp_path / "other.pt", seed=1))
    with pytest.raises(BitstreamError, match="encoded with model"):
        other.decompress(data)
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        load_codec(tiny_model).decompress(bytes(corrupt))


def test_cli_errors_are_one_line(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert nlic_main(["compress", str(tmp_path / "missing.png"), str(tmp_path / "o.nlic"),
                      "--model", str(tiny_model)]) != 0
    assert nlic_main(["decompress", str(tmp_path / "missing.nlic"), str(tmp_path / "o.png"),
                      "--model", str(tiny_model)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("nlic ") for line in err)


def test_quickstart_trains_evaluates_and_logs(tmp_path: Path) -> None:
    """The README's main job, shortened: train, export, evaluate for real, demo, W&B offline."""
    from nlic.utils.wandb_offline import find_runs, read_history

    cmd = [
        "nlic-train", "experiment=quickstart", f"paths.log_dir={tmp_path}", "trainer.max_epochs=1",
        "data.epoch_size=16", "evaluate.max_images=1", "evaluate.taus=[0,1]", "data.max_val_images=1",
        "tau.values=[0,1]", "trainer.log_every_n_steps=1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (run,) = list((tmp_path / "quickstart" / "runs").iterdir())
    results = json.loads((run / "eval_results.json").read_text())
    assert {r["tau"] for r in results["rows"]} == {0, 1}
    assert all(r["bound_ok"] for r in results["rows"])
    assert all(r["bpp"] > 0 for r in results["rows"])
    assert (run / "demo_tau0.nlic").exists() and (run / "demo_tau2.nlic").exists()
    # the Lightning checkpoint loads and codes like the exported model
    codec = load_codec(run / "checkpoints" / "last.ckpt")
    img = np.asarray(Image.open(Path(__import__("nlic").__file__).parent / "assets" / "demo.png").convert("RGB"))
    assert np.array_equal(codec.decompress(codec.compress(img, 0).data).pixels, img)
    (wandb_file,) = find_runs(run)
    history = read_history(wandb_file)
    for key in ("train/bpp", "val/bpp_tau0", "val/psnr_tau1", "val/max_err_tau1", "eval/bpp_tau0", "eval/max_err_tau1"):
        assert key in history, key
    assert history["eval/max_err_tau1"][-1] <= 1


def test_export_half_precision_codes_exactly(tiny_model: Path, photo: np.ndarray, tmp_path: Path, capsys) -> None:
    out = tmp_path / "half.pt"
    assert nlic_main(["export", str(tiny_model), str(out), "--half"]) == 0
    # the tiny model has no grey heads, and the export says so (the shipped default's would add them)
    assert "no grey heads" in capsys.readouterr().out
    assert out.stat().st_size < tiny_model.stat().st_size
    data = load_codec(out, stored_fallback=False).compress(photo, 0).data
    assert np.array_equal(load_codec(out).decompress(data).pixels, photo)
    assert nlic_main(["export", str(tiny_model), str(out)]) == 2  # no silent overwrite

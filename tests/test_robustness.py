"""Robustness of the codec end to end, on real (scikit-image bundled) photographs.

Any real image in (odd sizes, 1x1, several tiles, EXIF-rotated JPEG, grayscale, alpha, palette),
every bad argument / bad model / bad file refused with one line and no traceback, outputs atomic,
inputs untouched, checkpoints loaded safely, training data and NaN losses handled.
See docs/robustness.md for the table these tests fill in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from nlic.bitstream.container import Container
from nlic.cli.main import main
from nlic.errors import BitstreamError, ModelError, NlicError
from tests.conftest import TINY_CONFIG, make_tiny_model

# ----------------------------------------------------------------------------------------- helpers


def nlic(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``nlic ARGS`` in-process; return (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def _nlic_command() -> list[str]:
    script = Path(sys.executable).with_name("nlic")
    if script.is_file():
        return [str(script)]
    found = shutil.which("nlic")
    return [found] if found else [sys.executable, "-m", "nlic.cli.main"]


def nlic_subprocess(*args: object, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``nlic`` console script in a fresh process."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    environ.pop("NLIC_DEBUG", None)
    environ.update(env or {})
    return subprocess.run([*_nlic_command(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environ)  # fmt: skip


def assert_one_line_error(rc: int, err: str, *fragments: str, code: int = 2) -> None:
    assert rc == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    Image.fromarray(np.ascontiguousarray(arr)).save(path, **kwargs)
    return path


def decoded(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def max_err(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Code on one thread: on a shared 2-core machine a 2-thread pool spin-waits and the small
    tensors of the wavefront coder run ~20x slower (see docs/robustness.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture as ``tiny_model``, other weights (so another model id)."""
    return make_tiny_model(tmp_path_factory.mktemp("other") / "other.pt", seed=1)


# ------------------------------------------------------------------------------- real input kinds


def _exif_jpeg(path: Path) -> np.ndarray:
    """An EXIF orientation-6 JPEG (stored rotated); returns the upright pixels a viewer shows."""
    upright = skdata.chelsea()[120:137, 180:209]  # 17 x 29
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    save(path, np.rot90(upright, 1), quality=95, exif=exif.tobytes())
    with Image.open(path) as im:  # Pillow does not apply EXIF on its own: the stored, lossy pixels
        stored = np.asarray(im)
    return np.rot90(stored, -1)


def make_input(kind: str, folder: Path) -> tuple[Path, np.ndarray, str]:
    """(input file, the pixels the decoded PNG must match (alpha last), the decoded PNG's mode)."""
    astro, chelsea, camera, coffee = skdata.astronaut(), skdata.chelsea(), skdata.camera(), skdata.coffee()
    if kind == "rgb_1x1":
        px = astro[200:201, 250:251]
        return save(folder / "one.png", px), px, "RGB"
    if kind == "rgb_odd":
        px = coffee[150:167, 250:279]  # 17 x 29
        return save(folder / "odd.png", px), px, "RGB"
    if kind == "gray":
        px = camera[100:117, 200:229]
        return save(folder / "gray.png", px), px, "L"
    if kind == "rgba":
        rgb = astro[60:77, 170:199]
        alpha = camera[300:317, 300:329]  # a real, varied alpha plane
        return save(folder / "rgba.png", np.dstack([rgb, alpha])), np.dstack([rgb, alpha]), "RGBA"
    if kind == "la":
        gray, alpha = camera[100:117, 200:229], (camera[10:27, 10:39] // 2).astype(np.uint8)
        return save(folder / "la.png", np.dstack([gray, alpha])), np.dstack([gray, alpha]), "LA"
    if kind == "palette":
        pal = Image.fromarray(chelsea[100:117, 150:179]).quantize(colors=24)
        pal.save(folder / "pal.png")
        assert Image.open(folder / "pal.png").mode == "P"
        return folder / "pal.png", np.asarray(pal.convert("RGB")), "RGB"
    if kind == "exif_jpeg":
        path = folder / "rotated.jpg"
        return path, _exif_jpeg(path), "RGB"
    raise ValueError(kind)


KINDS = ["rgb_1x1", "rgb_odd", "gray", "rgba", "la", "palette", "exif_jpeg"]


@pytest.mark.parametrize("tau", [0, 1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_cli_roundtrip_real_inputs(kind, tau, tiny_model, tmp_path, capsys):
    src, expected, out_mode = make_input(kind, tmp_path)
    before = sha256(src)
    code, png = tmp_path / "x.nlic", tmp_path / "x.out.png"
    rc, out, err = nlic(capsys, "compress", src, code, "--tau", tau, "--model", tiny_model)
    assert rc == 0, err
    rc, out, err = nlic(capsys, "decompress", code, png, "--model", tiny_model)
    assert rc == 0, err
    mode, got = decoded(png)
    assert mode == out_mode
    colour = got if out_mode in ("RGB", "L") else got[..., :-1]
    want = expected if out_mode in ("RGB", "L") else expected[..., :-1]
    assert got.shape == expected.shape
    assert max_err(colour, want) <= tau  # tau = 0: bit-exact
    if out_mode.endswith("A"):
        np.testing.assert_array_equal(got[..., -1], expected[..., -1])  # alpha restored exactly
    assert sha256(src) == before  # the input is never modified
    assert Container.from_bytes(code.read_bytes()).mode == out_mode


@pytest.mark.parametrize("tau", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_cli_odd_size_67x131(photo, tau, tiny_model, tmp_path, capsys):
    src = save(tmp_path / "photo.png", photo)
    rc, _, err = nlic(capsys, "compress", src, tmp_path / "p.nlic", "--tau", tau, "--model", tiny_model)
    assert rc == 0, err
    rc, _, err = nlic(capsys, "decompress", tmp_path / "p.nlic", tmp_path / "p.png", "--model", tiny_model)
    assert rc == 0, err
    mode, got = decoded(tmp_path / "p.png")
    assert mode == "RGB" and max_err(got, photo) <= tau


def _tiled(shape: tuple[int, int], tau: int, tile: int, model: Path, tmp_path: Path, capsys) -> None:
    h, w = shape
    img = np.ascontiguousarray(skdata.astronaut()[30 : 30 + h, 120 : 120 + w])
    src = save(tmp_path / "big.png", img)
    # (--no-jxl-tiles: at tau = 0 the image's own JPEG XL code, one tile, may win; these tests are of tiles)
    rc, _, err = nlic(capsys, "compress", src, tmp_path / "big.nlic", "--tau", tau, "--tile", tile, "--model", model,
                      "--no-jxl-tiles")
    assert rc == 0, err
    c = Container.from_bytes((tmp_path / "big.nlic").read_bytes())
    assert c.tile == tile and len(c.tiles) == -(-h // tile) * -(-w // tile) > 1
    # the decoder takes the tile size from the file (no --tile on decompress)
    rc, _, err = nlic(capsys, "decompress", tmp_path / "big.nlic", tmp_path / "big.out.png", "--model", model)
    assert rc == 0, err
    mode, got = decoded(tmp_path / "big.out.png")
    assert mode == "RGB" and max_err(got, img) <= tau


def test_cli_several_tiles(tiny_model, tmp_path, capsys):
    _tiled((70, 100), 1, 64, tiny_model, tmp_path, capsys)  # 2 x 2 tiles, partial ones at the edges


@pytest.mark.slow
@pytest.mark.parametrize("tau", [0, 1, 3])
def test_cli_several_tiles_150x200(tau, tiny_model, tmp_path, capsys):
    _tiled((150, 200), tau, 64, tiny_model, tmp_path, capsys)  # 3 x 4 tiles


@pytest.mark.parametrize("tau", [40, 255])
def test_large_tau_and_single_symbol_alphabets(tau, tiny_model):
    """Large tau (and 1x1 images) leave one residual bin per channel: a one-symbol alphabet."""
    from nlic.api import load_codec

    codec = load_codec(tiny_model).image_codec
    img = np.ascontiguousarray(skdata.coffee()[100:113, 100:121])
    for px in (img, img[:1, :1], img[:2, :3]):
        out = codec.decompress(codec.compress(px, tau).data).pixels
        assert max_err(out, px) <= tau


def test_16bit_png_refused(tiny_model, tmp_path, capsys):
    deep = (skdata.camera()[:40, :40].astype(np.uint16) * 257).astype(np.uint16)
    src = tmp_path / "deep.png"
    Image.fromarray(deep).save(src)
    assert Image.open(src).mode.startswith("I;16")
    rc, _, err = nlic(capsys, "compress", src, tmp_path / "d.nlic", "--model", tiny_model)
    assert_one_line_error(rc, err, "16-bit", "not supported", str(src))
    assert not (tmp_path / "d.nlic").exists()


def test_subprocess_roundtrip(tiny_model, tmp_path):
    """The real console script, fresh processes: compress then decompress a grayscale photo."""
    gray = np.ascontiguousarray(skdata.camera()[200:219, 230:261])  # 19 x 31
    src = save(tmp_path / "cam.png", gray)
    before = sha256(src)
    res = nlic_subprocess("compress", src, tmp_path / "cam.nlic", "--tau", 2, "--model", tiny_model)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "31x19 L, tau=2" in res.stdout
    res = nlic_subprocess("decompress", tmp_path / "cam.nlic", tmp_path / "cam.out.png", "--model", tiny_model)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    mode, got = decoded(tmp_path / "cam.out.png")
    assert mode == "L" and max_err(got, gray) <= 2
    assert sha256(src) == before


# ---------------------------------------------------------------------------------- bad arguments


@pytest.fixture()
def photo_png(tmp_path: Path) -> Path:
    return save(tmp_path / "in.png", skdata.coffee()[200:216, 300:324])


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--tau", "256"], ["between 0 and 255", "256"]),
        (["--tau", "1000"], ["between 0 and 255"]),
        (["--tau", "-1"], ["between 0 and 255", "-1"]),
        (["--tau", "1.5"], ["integer", "1.5"]),
        (["--tau", "abc"], ["integer", "abc"]),
        (["--tile", "100"], ["multiple of 64"]),
        (["--bogus"], ["unrecognized arguments"]),
    ],
)
def test_bad_arguments_in_process(args, fragments, photo_png, tiny_model, capsys):
    out = photo_png.with_suffix(".nlic")
    rc, _, err = nlic(capsys, "compress", photo_png, out, "--model", tiny_model, *args)
    assert_one_line_error(rc, err, *fragments)
    assert not out.exists()


def test_bad_inputs_in_process(tmp_path, tiny_model, capsys):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    cases = [
        (text, ["not a supported image", str(text)]),
        (tmp_path / "missing.png", ["not found", "missing.png"]),
        (tmp_path, ["directory"]),
    ]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases.append((empty, ["empty file"]))
    trunc = tmp_path / "trunc.png"
    buf = save(tmp_path / "full.png", skdata.chelsea()[:64, :64]).read_bytes()
    trunc.write_bytes(buf[: len(buf) // 2])
    cases.append((trunc, ["corrupt or truncated", "trunc.png"]))
    for src, fragments in cases:
        rc, _, err = nlic(capsys, "compress", src, tmp_path / "o.nlic", "--model", tiny_model)
        assert_one_line_error(rc, err, *fragments)
        assert not (tmp_path / "o.nlic").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--tau", "256"], ["between 0 and 255"]),
        (["--tau", "-1"], ["between 0 and 255"]),
        (["--tau", "abc"], ["integer"]),
        (["INPUT=text"], ["not a supported image"]),
        (["INPUT=missing"], ["not found"]),
        (["--model", "MISSING"], ["model file not found"]),
    ],
)
def test_bad_arguments_subprocess(args, fragments, photo_png, tmp_path):
    """Fresh processes: one line on stderr, exit 2, no traceback (these fail before torch loads)."""
    src = photo_png
    extra = []
    for a in args:
        if a == "INPUT=text":
            src = tmp_path / "text.jpg"
            src.write_text("hello\n")
        elif a == "INPUT=missing":
            src = tmp_path / "nothing.png"
        elif a == "MISSING":
            extra.append(tmp_path / "no_such_model.pt")
        else:
            extra.append(a)
    out = tmp_path / "o.nlic"
    res = nlic_subprocess("compress", src, out, *extra, timeout=120)
    assert_one_line_error(res.returncode, res.stderr, *fragments)
    assert not out.exists()


def _bad_model_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    files = {"random bytes": folder / "random.pt", "text": folder / "readme.pt", "empty": folder / "empty.pt"}
    files["random bytes"].write_bytes(rng.bytes(4096))
    files["text"].write_text("model weights are in the other folder\n")
    files["empty"].write_bytes(b"")
    files["zip of text"] = folder / "zipped.pt"
    shutil.make_archive(str(folder / "zipped"), "zip", root_dir=folder, base_dir="readme.pt")
    (folder / "zipped.zip").rename(files["zip of text"])
    return files


def test_model_files_that_are_not_models(tmp_path, photo_png, capsys):
    for name, path in _bad_model_files(tmp_path).items():
        rc, _, err = nlic(capsys, "compress", photo_png, tmp_path / "o.nlic", "--model", path)
        assert_one_line_error(rc, err, str(path))
        assert "model" in err, (name, err)
        assert not (tmp_path / "o.nlic").exists()
    rc, _, err = nlic(capsys, "compress", photo_png, tmp_path / "o.nlic", "--model", tmp_path)
    assert_one_line_error(rc, err, "directory")


@pytest.mark.slow
def test_model_files_that_are_not_models_subprocess(tmp_path, photo_png):
    for path in _bad_model_files(tmp_path).values():
        res = nlic_subprocess("compress", photo_png, tmp_path / "o.nlic", "--model", path)
        assert_one_line_error(res.returncode, res.stderr, "model", str(path))


def test_internal_error_is_one_line_unless_debug(tmp_path, monkeypatch, capsys, tiny_model, photo_png):
    import nlic.bitstream.container as container_mod

    def boom(data):
        raise RuntimeError("simulated\nbug")

    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--model", tiny_model)[0] == 0
    monkeypatch.setattr(container_mod.Container, "from_bytes", staticmethod(boom))
    monkeypatch.delenv("NLIC_DEBUG", raising=False)
    rc, _, err = nlic(capsys, "info", tmp_path / "a.nlic")
    assert_one_line_error(rc, err, "nlic info: internal error: RuntimeError: simulated bug",
                          "set NLIC_DEBUG=1 for a traceback", code=1)
    monkeypatch.setenv("NLIC_DEBUG", "1")
    with pytest.raises(RuntimeError, match="simulated"):
        main(["info", str(tmp_path / "a.nlic")])


def test_a_closed_pipe_ends_quietly(tmp_path, capsys, tiny_model, photo_png):
    """`nlic info f.nlic | head -1`: the reader closes the pipe before nlic has written; nlic stops
    without a traceback or an "internal error" (exit 141, as for SIGPIPE)."""
    import subprocess
    import sys

    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--model", tiny_model)[0] == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    proc = subprocess.run([sys.executable, "-m", "nlic.cli.main", "info", str(tmp_path / "a.nlic")], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 141, (proc.returncode, proc.stderr)
    assert proc.stderr == "", proc.stderr


# --------------------------------------------------------------------------- encoder/decoder mismatch


def test_other_model_refused_naming_both_ids(tiny_model, other_model, tmp_path, capsys, photo_png):
    from nlic.api import load_codec

    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--model", tiny_model)[0] == 0
    rc, _, err = nlic(capsys, "decompress", tmp_path / "a.nlic", tmp_path / "a.png", "--model", other_model)
    ids = load_codec(tiny_model).model_id, load_codec(other_model).model_id
    assert ids[0] != ids[1]
    assert_one_line_error(rc, err, ids[0], ids[1], "--model")
    assert not (tmp_path / "a.png").exists()


def _perturbed_load_model(monkeypatch: pytest.MonkeyPatch, delta: float = 0.02) -> None:
    """Make every load hand back slightly different weights under the SAME model id (as a decoder
    on other hardware or library versions would compute slightly different numbers)."""
    import nlic.api
    import nlic.model_io

    real = nlic.model_io.load_model

    def load(path):
        loaded = real(path)
        with torch.no_grad():
            last = loaded.codec.lossy.g_s[-1]
            last.bias.add_(delta)
        return loaded

    monkeypatch.setattr(nlic.api, "load_model", load)


def test_reconstruction_checksum_catches_decoder_mismatch(tiny_model, tmp_path, monkeypatch, capsys, photo_png):
    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--tau", 1, "--model", tiny_model,
                "--learned-only")[0] == 0
    _perturbed_load_model(monkeypatch)
    rc, _, err = nlic(capsys, "decompress", tmp_path / "a.nlic", tmp_path / "a.png", "--model", tiny_model)
    assert_one_line_error(rc, err, "integrity check", "lossy layer", "no image was written")
    assert not (tmp_path / "a.png").exists()


def test_reconstruction_checksum_api(tiny_model, monkeypatch):
    from nlic.api import load_codec

    img = np.ascontiguousarray(skdata.astronaut()[100:110, 200:213])
    data = load_codec(tiny_model, stored_fallback=False).compress(img, 0).data
    _perturbed_load_model(monkeypatch)
    with pytest.raises(BitstreamError, match="float decoder is not exact"):
        load_codec(tiny_model).decompress(data)


# ------------------------------------------------------------------------------------------ files


def test_existing_output_needs_force(tiny_model, tmp_path, capsys, photo_png):
    code, png = tmp_path / "a.nlic", tmp_path / "a.png"
    code.write_bytes(b"precious")
    png.write_bytes(b"precious too")
    rc, _, err = nlic(capsys, "compress", photo_png, code, "--model", tiny_model)
    assert_one_line_error(rc, err, "exists", "--force")
    assert code.read_bytes() == b"precious"
    assert nlic(capsys, "compress", photo_png, code, "--model", tiny_model, "--force")[0] == 0
    assert code.read_bytes()[:4] == b"NLIC"
    rc, _, err = nlic(capsys, "decompress", code, png, "--model", tiny_model)
    assert_one_line_error(rc, err, "exists", "--force")
    assert png.read_bytes() == b"precious too"
    assert nlic(capsys, "decompress", code, png, "--model", tiny_model, "--force")[0] == 0
    assert decoded(png)[1].shape == (16, 24, 3)


def test_output_same_as_input_refused(tiny_model, tmp_path, capsys, photo_png):
    before = sha256(photo_png)
    link = tmp_path / "link.png"
    link.symlink_to(photo_png)
    for target in (photo_png, link, tmp_path / "." / photo_png.name):
        rc, _, err = nlic(capsys, "compress", photo_png, target, "--model", tiny_model, "--force")
        assert_one_line_error(rc, err, "same file")
    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--model", tiny_model)[0] == 0
    code_before = sha256(tmp_path / "a.nlic")
    rc, _, err = nlic(capsys, "decompress", tmp_path / "a.nlic", tmp_path / "a.nlic", "--model", tiny_model,
                      "--force")  # fmt: skip
    assert rc == 2 and "Traceback" not in err  # refused (the .nlic extension is not an image type either)
    os.symlink(tmp_path / "a.nlic", tmp_path / "alias.png")
    rc, _, err = nlic(capsys, "decompress", tmp_path / "a.nlic", tmp_path / "alias.png", "--model", tiny_model,
                      "--force")  # fmt: skip
    assert_one_line_error(rc, err, "same file")
    assert sha256(photo_png) == before and sha256(tmp_path / "a.nlic") == code_before


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(exc, tiny_model, tmp_path, monkeypatch, capsys, photo_png):
    import nlic.io.atomic as atomic

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert nlic(capsys, "compress", photo_png, out_dir / "ok.nlic", "--model", tiny_model)[0] == 0
    before = _files(out_dir)

    def fail(path):
        raise exc

    monkeypatch.setattr(atomic, "_fsync_file", fail)  # the write fails after bytes hit the temp file
    rc, _, err = nlic(capsys, "compress", photo_png, out_dir / "new.nlic", "--model", tiny_model)
    assert rc == (130 if isinstance(exc, KeyboardInterrupt) else 2) and "Traceback" not in err
    rc, _, err = nlic(capsys, "decompress", out_dir / "ok.nlic", out_dir / "new.png", "--model", tiny_model)
    assert rc == (130 if isinstance(exc, KeyboardInterrupt) else 2) and "Traceback" not in err
    assert _files(out_dir) == before  # neither a partial output nor a stray temporary file


def test_failed_decode_writes_nothing(tiny_model, tmp_path, capsys, photo_png):
    assert nlic(capsys, "compress", photo_png, tmp_path / "a.nlic", "--model", tiny_model)[0] == 0
    data = bytearray((tmp_path / "a.nlic").read_bytes())
    data[60] ^= 0x10
    (tmp_path / "bad.nlic").write_bytes(bytes(data))
    before = _files(tmp_path)
    rc, _, err = nlic(capsys, "decompress", tmp_path / "bad.nlic", tmp_path / "bad.png", "--model", tiny_model)
    assert_one_line_error(rc, err, "checksum")
    assert _files(tmp_path) == before


# ------------------------------------------------------------------------------------ checkpoints


def _blob(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=True)


class _Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_is_not_executed(tmp_path, tiny_model):
    from nlic.model_io import load_model

    marker = tmp_path / "pwned"
    blob = _blob(tiny_model)
    blob["meta"] = {"x": _Payload(marker)}
    evil = tmp_path / "evil.pt"
    torch.save(blob, evil)
    with pytest.raises(ModelError, match="not an nlic model"):
        load_model(evil)
    with open(evil, "wb") as f:  # a plain pickle, not even a torch zip
        pickle.dump(_Payload(marker), f)
    with pytest.raises(ModelError):
        load_model(evil)
    assert not marker.exists()


def test_config_target_outside_nlic_refused(tmp_path, tiny_model):
    from nlic.model_io import load_model

    marker = tmp_path / "pwned"
    hostile = [
        {"_target_": "pathlib.Path.touch", "self": str(marker)},
        {"_target_": "nlic.codecs.flow.os.system", "_args_": [f"touch {marker}"]},  # right prefix, wrong object
        {**TINY_CONFIG["lossy"], "nested": {"_target_": "os.system", "_args_": [f"touch {marker}"]}},
    ]
    for lossy in hostile:
        blob = _blob(tiny_model)
        blob["config"] = {**blob["config"], "lossy": lossy}
        torch.save(blob, tmp_path / "target.pt")
        with pytest.raises(ModelError, match="refusing model config with _target_"):
            load_model(tmp_path / "target.pt")
    assert not marker.exists()


def test_checkpoint_of_other_architecture_refused(tmp_path, tiny_model, capsys, photo_png):
    blob = _blob(tiny_model)
    config = {**TINY_CONFIG, "lossy": {**TINY_CONFIG["lossy"], "N": 32}}  # a wider model than the weights
    blob["config"] = config
    torch.save(blob, tmp_path / "wider.pt")
    rc, _, err = nlic(capsys, "compress", photo_png, tmp_path / "o.nlic", "--model", tmp_path / "wider.pt")
    assert_one_line_error(rc, err, "does not match this nlic's architecture", "size mismatch")
    blob["config"] = {**TINY_CONFIG, "residual": {**TINY_CONFIG["residual"], "layers": 3}}  # missing weights
    torch.save(blob, tmp_path / "deeper.pt")
    rc, _, err = nlic(capsys, "compress", photo_png, tmp_path / "o.nlic", "--model", tmp_path / "deeper.pt")
    assert_one_line_error(rc, err, "does not match this nlic's architecture")


def test_checkpoint_from_newer_nlic_refused(tmp_path, tiny_model, capsys, photo_png):
    from nlic.model_io import MODEL_FORMAT_VERSION

    blob = _blob(tiny_model)
    blob["format_version"] = MODEL_FORMAT_VERSION + 1
    torch.save(blob, tmp_path / "newer.pt")
    rc, _, err = nlic(capsys, "compress", photo_png, tmp_path / "o.nlic", "--model", tmp_path / "newer.pt")
    assert_one_line_error(rc, err, "newer nlic", "upgrade")


def test_model_io_uses_weights_only(monkeypatch, tiny_model):
    import nlic.model_io

    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(nlic.model_io.torch, "load", spy)
    nlic.model_io.load_model(tiny_model)
    assert seen.get("weights_only") is True


# ---------------------------------------------------------------------------------- training data


def test_training_folder_skips_bad_files_with_warning(tmp_path, caplog):
    from nlic.data.images import load_folder

    good = {
        "astronaut": save(tmp_path / "astronaut.png", skdata.astronaut()[:80, :96]),
        "coffee": save(tmp_path / "coffee.jpg", skdata.coffee()[:72, :80], quality=90),
        "camera": save(tmp_path / "camera.png", skdata.camera()[:64, :64]),
    }
    png = good["astronaut"].read_bytes()
    bad = {
        "truncated.png": png[: len(png) // 2],
        "badcrc.png": png[:33] + b"\0\0\0\0" + png[37:],  # Pillow raises SyntaxError for this one
        "notes.jpg": b"just some text\n",
        "empty.png": b"",
        "noise.tif": np.random.default_rng(0).bytes(300),
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    Image.fromarray(skdata.camera()[:64, :64].astype(np.uint16) * 257).save(tmp_path / "deep16.png")
    with caplog.at_level(logging.WARNING, logger="nlic.data.images"):
        images = dict(load_folder(tmp_path))
    assert set(images) == set(good)
    assert images["camera"].shape == (64, 64, 3)
    for name in [*bad, "deep16.png"]:
        assert any(name in rec.getMessage() for rec in caplog.records), name


def test_nan_loss_detected_with_step(monkeypatch):
    from nlic.lightning.module import NearLosslessModule

    torch.manual_seed(0)
    module = NearLosslessModule(model_config=TINY_CONFIG)
    opts = module.configure_optimizers()
    monkeypatch.setattr(module, "optimizers", lambda *a, **k: opts)
    batch = torch.from_numpy(np.ascontiguousarray(skdata.astronaut()[:64, :64])).permute(2, 0, 1)[None].float()
    poisoned = batch.clone()
    poisoned[0, 1, 10:20, 10:20] = float("nan")  # a corrupt sample in the batch
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step 0"):
        module.training_step(poisoned, 0)
    # and a codec that diverges (NaN likelihoods) on a clean batch
    real_forward = module.codec.forward

    def diverged(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        out["likelihoods"] = {k: v * float("nan") for k, v in out["likelihoods"].items()}
        return out

    monkeypatch.setattr(module.codec, "forward", diverged)
    with pytest.raises(FloatingPointError, match="step 0"):
        module.training_step(batch, 0)


# --------------------------------------------------------------------------------------- sanity


def test_container_rejects_header_bombs():
    """A small file whose header claims a huge image or tau is refused before any allocation."""
    c = Container(64, 64, 1, 64, b"\0" * 8, 0, "RGB", [], b"")
    body = bytearray(c.to_bytes()[:-4])
    for field, value in (("height", 20000), ("tau", 300)):
        b = bytearray(body)
        if field == "height":
            struct.pack_into("<II", b, 8, 20000, 20000)
        else:
            struct.pack_into("<H", b, 6, value)
        data = bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))
        with pytest.raises(BitstreamError, match="megapixel|tau"):
            Container.from_bytes(data)


def test_errors_are_nlic_errors():
    assert issubclass(BitstreamError, NlicError) and BitstreamError.exit_code == 2

"""Daily use: many files per command, models found by the id a file names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlic.cli.main import main


def _photos(folder: Path, photos: dict[str, np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in photos.items():
        path = folder / f"{name}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def test_batch_compress_and_decompress_a_folder(photos, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    paths = _photos(src / "sub", photos)
    (src / "notes.txt").write_text("not an image")
    assert main(["compress", str(src), "-o", str(tmp_path / "packed"), "--tau", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(paths)} of {len(paths)} files done" in out and "max error 1" in out and "bpp" in out
    packed = sorted((tmp_path / "packed" / "sub").glob("*.nlic"))
    assert [p.stem for p in packed] == sorted(p.stem for p in paths)  # sub-folders kept, non-images skipped
    assert main(["decompress", str(tmp_path / "packed"), "-o", str(tmp_path / "restored")]) == 0
    for path in paths:
        restored = np.asarray(Image.open(tmp_path / "restored" / "sub" / f"{path.stem}.png")).astype(int)
        assert np.abs(restored - np.asarray(Image.open(path)).astype(int)).max() <= 1


def test_batch_reports_bad_files_and_goes_on(photos, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = _photos(tmp_path / "in", dict(list(photos.items())[:2]))
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc = main(["compress", *map(str, paths), str(bad), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 2
    assert "2 of 3 files done" in captured.out and "1 FAILED" in captured.out
    assert "broken.png" in captured.err
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.nlic")) == sorted(p.stem for p in paths)


def test_batch_refuses_existing_outputs_and_name_clashes(photos, tmp_path: Path, capsys) -> None:
    one = _photos(tmp_path / "a", dict(list(photos.items())[:1]))[0]
    twin = tmp_path / "b" / one.name
    twin.parent.mkdir()
    twin.write_bytes(one.read_bytes())
    assert main(["compress", str(one), str(twin), "-o", str(tmp_path / "out")]) == 2
    assert "would both be written" in capsys.readouterr().err
    assert main(["compress", str(one), "-o", str(tmp_path / "out")]) == 0
    assert main(["compress", str(one), "-o", str(tmp_path / "out")]) == 2
    assert "--force" in capsys.readouterr().err


def test_parallel_jobs_give_the_same_files(photos, tmp_path: Path) -> None:
    paths = _photos(tmp_path / "in", photos)
    assert main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "one"), "--tau", "2"]) == 0
    assert main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "two"), "--tau", "2", "--jobs", "2"]) == 0
    for path in paths:
        name = f"{path.stem}.nlic"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_decoder_finds_an_exported_model_by_id(tiny_model: Path, photo: np.ndarray, tmp_path: Path) -> None:
    """``nlic export`` registers the model; ``nlic decompress`` without --model finds it, in a fresh
    process, through the store named by NLIC_MODEL_DIR."""
    store = tmp_path / "store"
    env = {**os.environ, "NLIC_MODEL_DIR": str(store), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "nlic.cli.main"]
    exported = tmp_path / "mine.pt"
    subprocess.run([*cli, "export", str(tiny_model), str(exported)], env=env, check=True, capture_output=True)
    assert len(list(store.glob("*.pt"))) == 1
    Image.fromarray(photo).save(tmp_path / "p.png")
    subprocess.run([*cli, "compress", str(tmp_path / "p.png"), str(tmp_path / "p.nlic"), "--model", str(exported)],
                   env=env, check=True, capture_output=True)
    exported.unlink()  # only the store has it now
    res = subprocess.run([*cli, "decompress", str(tmp_path / "p.nlic"), str(tmp_path / "p.out.png")], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.out.png")), photo)
    # a store without it: one line naming where the decoder looked
    res = subprocess.run([*cli, "decompress", str(tmp_path / "p.nlic"), str(tmp_path / "q.png")],
                         env={**env, "NLIC_MODEL_DIR": str(tmp_path / "empty")}, capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "not in the model store" in res.stderr and "shipped default model" in res.stderr
    assert not (tmp_path / "q.png").exists()

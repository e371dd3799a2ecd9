"""Grey heads: a second pair of heads, trained on grey crops, codes grey images; colour images are
coded exactly as by the model without them.  Earlier shipped defaults still decode their files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from nlic.api import load_codec
from nlic.bitstream.container import Container
from nlic.cli.main import main
from nlic.errors import ModelError
from nlic.model_io import load_model
from nlic.model_store import PREVIOUS_DEFAULTS, find_model

from .conftest import TINY_CONFIG, make_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("gray")
    colour = make_tiny_model(root / "colour.pt", seed=0)
    gray = make_tiny_model(root / "gray.pt", seed=1)
    merged = root / "merged.pt"
    assert main(["export", str(colour), str(merged), "--gray-heads", str(gray), "--no-register"]) == 0
    return colour, gray, merged


def _tiles(data_: bytes) -> list:
    return [(t.kind, t.latents, t.residual, t.stored) for t in Container.from_bytes(data_).tiles]


def test_colour_images_code_as_without_grey_heads(models, photo: np.ndarray) -> None:
    """The grey heads touch a colour image only where the encoder lets them code R (format 8): with
    that off, its tiles are the colour model's byte for byte; with it on, every file decodes."""
    colour, _, merged = models
    a, b = load_codec(colour, stored_fallback=False), load_codec(merged, stored_fallback=False)
    assert a.image_codec.model_id != b.image_codec.model_id
    for tau in (0, 2):
        b.image_codec.grey_red = False
        ra, rb = a.compress(photo, tau), b.compress(photo, tau)
        assert _tiles(ra.data) == _tiles(rb.data)
        b.image_codec.grey_red = True
        restored = b.decompress(b.compress(photo, tau).data).pixels
        assert int(np.abs(restored.astype(int) - photo.astype(int)).max()) <= tau


def test_grey_images_use_the_grey_heads_exactly(models) -> None:
    colour, _, merged = models
    grey = np.ascontiguousarray(data.camera()[100:190, 200:330])
    a, b = load_codec(colour, stored_fallback=False), load_codec(merged, stored_fallback=False)
    assert "gray_plain" in b.image_codec.loaded.quantization
    for tau in (0, 2, 5):
        result = b.compress(grey, tau)
        restored = b.decompress(result.data).pixels[..., 0]
        err = int(np.abs(restored.astype(int) - grey.astype(int)).max())
        assert err <= tau and (tau or err == 0)
        assert _tiles(result.data) != _tiles(a.compress(grey, tau).data)  # other heads, other code


def test_a_model_with_grey_heads_gives_its_grey_heads(models, tmp_path: Path) -> None:
    """``--gray-heads`` of a model that has grey heads (the shipped default, when a new stage
    replaces its colour heads) attaches those grey heads, not its colour ones."""
    colour, gray, merged = models
    recoloured = tmp_path / "recoloured.pt"
    other = make_tiny_model(tmp_path / "new_colour.pt", seed=2)
    assert main(["export", str(other), str(recoloured), "--gray-heads", str(merged), "--no-register"]) == 0
    net = load_model(recoloured).codec.residual
    want, colour_heads = load_model(gray).codec.residual.head.state_dict(), load_model(other).codec.residual
    assert all(np.array_equal(v.numpy(), want[k].numpy()) for k, v in net.gray_head.state_dict().items())
    assert all(np.array_equal(v.numpy(), colour_heads.head.state_dict()[k].numpy())
               for k, v in net.head.state_dict().items())
    assert not all(np.array_equal(v.numpy(), colour_heads.head.state_dict()[k].numpy())
                   for k, v in net.gray_head.state_dict().items())  # (the colour heads differ: a real check)


@pytest.mark.parametrize("change", [{"mixtures": 3}, {"hidden": 32}], ids=["other mixtures", "larger"])
def test_grey_heads_need_the_same_architecture(models, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               change: dict) -> None:
    """Grey heads of another topology, or larger than the colour heads, are refused (smaller ones
    are grown: tests/test_warm_start.py)."""
    colour, _, _ = models
    other = make_tiny_model(tmp_path / "other.pt", config={
        **TINY_CONFIG, "residual": {**TINY_CONFIG["residual"], **change}})
    assert main(["export", str(colour), str(tmp_path / "x.pt"), "--gray-heads", str(other), "--no-register"]) != 0
    assert "architecture differs" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_earlier_defaults_are_shipped_under_their_id() -> None:
    """A file made by an earlier default model names it by id; the package keeps those models."""
    shipped = sorted(PREVIOUS_DEFAULTS.glob("*.pt"))
    for path in shipped:
        model_id = load_model(path).model_id
        assert path.stem == model_id.hex()
        assert find_model(model_id) == path
    with pytest.raises(ModelError, match="not in the model store"):
        find_model(bytes(8))


def test_a_plane_read_in_three_channels_gives_the_same_integers() -> None:
    """The decoder's R of a format 8 tile: the grey heads' mixtures from one plane's taps, each tap's
    three channel weights summed and only channel 0's hidden block, are the integers of the plane's
    taps repeated in all three channels through the whole network (shipped model, tau 0 and 2)."""
    import torch

    from nlic.api import load_codec

    codec = load_codec().image_codec
    rng = np.random.default_rng(5)
    for tau in (0, 2):
        head = codec.coder(tau, gray=True).head
        taps = torch.from_numpy(rng.integers(-128, 129, (4000, head.taps)).astype(np.float32))
        act, skip = head.context_gathered(taps.repeat_interleave(3, dim=-1))
        hidden = head.channel_hidden(head.trunk_features(act))
        want = head.channel_table(0, hidden, skip, np.zeros((4000, 3), dtype=np.float32))
        got = head.plane_table(taps)
        assert np.array_equal(got, want) and len(np.unique(got)) > 1000, tau

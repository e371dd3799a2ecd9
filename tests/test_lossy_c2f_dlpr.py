"""Tests of the ``c2f`` (coarse-to-fine hyperprior) and ``dlpr`` lossy codecs.

Models come from their Hydra YAML with ``feature_channels=8`` (default small widths); images are
crops of scikit-image's bundled astronaut.  Run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nlic.codecs.base import LatentPayload, LossyCodec
from nlic.codecs.blocks import WindowAttentionBlock

CODECS = ["c2f", "dlpr"]
LIKELIHOOD_KEYS = {"c2f": {"y", "z1", "z2"}, "dlpr": {"y", "z"}}
FEATURE_CHANNELS = 8
LMBDA = 0.01  # on the MSE in 8-bit units


def build(name: str, seed: int = 0) -> LossyCodec:
    torch.manual_seed(seed)
    cfg = OmegaConf.merge({"feature_channels": FEATURE_CHANNELS},
                          {"lossy": OmegaConf.load(f"conf/lossy/{name}.yaml")})
    return instantiate(cfg.lossy)


def astronaut(h: int, w: int, top: int = 0, left: int = 160) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()[top:top + h, left:left + w]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def rd_loss(out: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / num_pixels
    mse = torch.mean((255.0 * (out["x_hat"] - x)) ** 2)
    return LMBDA * mse + bpp, bpp


@pytest.fixture(scope="module", params=CODECS)
def trained(request):
    """A codec after a few optimizer steps on a 128x128 crop, with its eval losses."""
    torch.set_num_threads(1)
    name = request.param
    model = build(name)
    x = astronaut(128, 128)
    # CompressAI convention: the "net" optimizer skips the EntropyBottleneck quantiles, which
    # only the aux loss trains; clipping applies to the net parameters (lr 1e-3 is unstable
    # for the attention codec without warm-up, 3e-4 is not)
    net = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt = torch.optim.Adam([{"params": net, "lr": 3e-4}, {"params": aux, "lr": 1e-3}])

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return rd_loss(model(x), x)[0].item()

    before = eval_loss()
    model.train()
    train_losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = rd_loss(model(x), x)[0] + model.aux_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net, 1.0)
        opt.step()
        train_losses.append(loss.item())
    after = eval_loss()
    model.update(force=True)
    model.eval()
    return name, model, x, before, after, train_losses


@pytest.mark.parametrize("name", CODECS)
def test_forward_shapes_and_likelihoods(name: str) -> None:
    model = build(name)
    assert model.pad_multiple == 64
    x = astronaut(128, 128)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["features"].shape == (1, FEATURE_CHANNELS, 128, 128)
    assert set(out["likelihoods"]) == LIKELIHOOD_KEYS[name]
    strides = {"y": 16, "z": 64, "z1": 32, "z2": 64}
    for key, lik in out["likelihoods"].items():
        assert lik.shape[-2:] == (128 // strides[key], 128 // strides[key]), key
        assert torch.isfinite(lik).all()
        assert lik.min() > 0 and lik.max() <= 1, key
    aux = model.aux_loss()
    assert isinstance(aux, torch.Tensor) and torch.isfinite(aux)


def test_training_steps(trained) -> None:
    name, _, _, before, after, train_losses = trained
    assert all(math.isfinite(v) for v in train_losses), train_losses
    assert math.isfinite(after)
    assert after < before, (name, before, after)


def test_compress_decompress_roundtrip(trained) -> None:
    name, model, x, _, _, _ = trained
    with torch.no_grad():
        payload = model.compress_latents(x)
        assert isinstance(payload, LatentPayload)
        assert len(payload.strings) == len(LIKELIHOOD_KEYS[name])
        assert all(isinstance(s, bytes) and len(s) > 0 for s in payload.strings)
        enc = model.quantize_latents(x)
        dec = model.decode_latents(payload)
        assert set(enc) == set(dec) == LIKELIHOOD_KEYS[name]
        for key in enc:
            assert torch.equal(enc[key], dec[key]), key
        if name == "c2f":  # zero-mean coarse level: its quantized values are integers
            assert torch.equal(enc["z2"], enc["z2"].round())
        first = model.decompress_latents(payload)
        second = model.decompress_latents(payload)
        assert torch.equal(first["x_hat"], second["x_hat"])
        assert torch.equal(first["features"], second["features"])
        assert first["x_hat"].shape == x.shape
        assert first["features"].shape == (1, FEATURE_CHANNELS, *x.shape[-2:])
        # the decoder computes what forward() computes at eval time
        ref = model(x)
        torch.testing.assert_close(first["x_hat"], ref["x_hat"], atol=1e-5, rtol=1e-5)
        # real bytes are near the estimated rate (loose: tiny image, per-string overhead)
        real_bits = 8 * sum(len(s) for s in payload.strings)
        est_bits = sum(-torch.log2(v).sum().item() for v in ref["likelihoods"].values())
        assert real_bits < 1.2 * est_bits + 64 * len(payload.strings), (real_bits, est_bits)


def test_state_dict_reload_decodes_identically(trained) -> None:
    """Updated CDF buffers survive a state_dict round trip into a fresh (not updated) model."""
    name, model, x, _, _, _ = trained
    fresh = build(name, seed=1)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        payload = model.compress_latents(x)
        a = model.decompress_latents(payload)
        b = fresh.decompress_latents(payload)
    assert torch.equal(a["x_hat"], b["x_hat"]) and torch.equal(a["features"], b["features"])


@pytest.mark.parametrize("name", CODECS)
def test_non_square_input(name: str) -> None:
    model = build(name)
    x = astronaut(64, 192, top=100, left=100)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["features"].shape == (1, FEATURE_CHANNELS, 64, 192)
    assert out["likelihoods"]["y"].shape[-2:] == (4, 12)
    model.update(force=True)
    model.eval()
    with torch.no_grad():
        payload = model.compress_latents(x)
        enc = model.quantize_latents(x)
        dec = model.decode_latents(payload)
        rec = model.decompress_latents(payload)
    assert all(torch.equal(enc[k], dec[k]) for k in enc)
    assert rec["x_hat"].shape == x.shape and rec["features"].shape == (1, FEATURE_CHANNELS, 64, 192)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("hw", [(16, 24), (13, 21), (4, 4), (8, 8)])
def test_window_attention_block_any_size(shift: bool, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    block = WindowAttentionBlock(16, num_heads=2, window_size=8, shift=shift)
    x = torch.randn(2, 16, *hw)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()


def test_window_attention_block_is_local_and_ignores_padding() -> None:
    torch.manual_seed(0)
    block = WindowAttentionBlock(16, num_heads=2, window_size=8, shift=False).eval()
    x = torch.randn(1, 16, 13, 21)  # padded to 16 x 24 inside the block
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[:, :, 0, 0] += 5.0  # window (0, 0) only
        y2 = block(x2)
        changed = (y2 - y).abs().amax(dim=1)[0] > 0
        assert changed[:8, :8].any() and not changed[8:].any() and not changed[:, 8:].any()
    # windows that hold no padding are unaffected by the map size around them
    big = torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(big[:, :, :13, :13])[:, :, :8, :8], block(big)[:, :, :8, :8])
    # padded positions are masked out as keys for every real query
    mask = block._attention_mask(13, 21, 16, 24, 0, torch.device("cpu"))
    assert mask is not None and mask.shape == (6, 64, 64)
    pad = torch.ones(16, 24, dtype=torch.bool)
    pad[:13, :21] = False
    pad_w = pad.view(2, 8, 3, 8).permute(0, 2, 1, 3).reshape(6, 64)  # window partition
    for w in range(6):
        real, padded = ~pad_w[w], pad_w[w]
        assert (mask[w][real][:, padded] == -100).all()
        assert (mask[w][real][:, real] == 0).all()

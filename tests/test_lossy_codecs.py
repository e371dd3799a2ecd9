"""Tests of the CompressAI-based lossy codecs (factorized, hyperprior, joint_ar, checkerboard,
cheng2020) and of the reference ``mean_scale`` codec.

Each model is built from its Hydra YAML with ``feature_channels=8`` (default small widths), trained
for a few steps on a 128x128 crop of scikit-image's astronaut, then coded for real.  Run with
``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nlic.codecs.base import LatentPayload, LossyCodec
from nlic.codecs.cheng2020 import GaussianMixtureLatentCodec, gmm_likelihood, gmm_pmf_rows

CODECS = ["factorized", "hyperprior", "joint_ar", "checkerboard", "cheng2020", "mean_scale"]
LIKELIHOOD_KEYS = {name: {"y", "z"} for name in CODECS} | {"factorized": {"y"}}
#: codecs whose eval-mode forward quantizes y exactly as the real coder does
FORWARD_IS_DECODER = set(CODECS) - {"joint_ar"}
FEATURE_CHANNELS = 8
LMBDA = 0.01  # on the MSE in 8-bit units
STEPS = 4


def build(name: str, seed: int = 0) -> LossyCodec:
    torch.manual_seed(seed)
    cfg = OmegaConf.merge({"feature_channels": FEATURE_CHANNELS},
                          {"lossy": OmegaConf.load(f"conf/lossy/{name}.yaml")})
    return instantiate(cfg.lossy)


def astronaut(size: int = 128) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()[100:100 + size, 180:180 + size]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def rd_loss(out: dict, x: torch.Tensor) -> torch.Tensor:
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / num_pixels
    return LMBDA * torch.mean((255.0 * (out["x_hat"] - x)) ** 2) + bpp


def g_s_input(model: LossyCodec, fn, *args):
    """Run ``fn(*args)`` and capture the latent fed to the synthesis transform ``g_s``."""
    seen = []
    handle = model.g_s.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach()))
    try:
        out = fn(*args)
    finally:
        handle.remove()
    assert len(seen) == 1
    return out, seen[0]


def encoder_y_hat(model: LossyCodec, x: torch.Tensor) -> tuple[LatentPayload, torch.Tensor]:
    """The payload and the quantized latent the encoder coded."""
    if hasattr(model, "encode_latents"):
        return model.encode_latents(x)
    with torch.no_grad():  # mean_scale: y_hat = round(y - mu) + mu with mu from the decoded z
        payload = model.compress_latents(x)
        y = model.g_a(x)
        z_hat = model.entropy_bottleneck.decompress([payload.strings[1]], payload.shape)
        _, means = model.h_s(z_hat).chunk(2, 1)
        return payload, model.gaussian_conditional.quantize(y, "dequantize", means)


@pytest.fixture(scope="module", params=CODECS)
def trained(request):
    """(name, model after a few optimizer steps, losses, aux losses)."""
    torch.set_num_threads(1)
    name = request.param
    model = build(name)
    x = astronaut()
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(params, lr=1e-3)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-2)
    losses, aux_losses = [], []
    model.train()
    for _ in range(STEPS):
        opt.zero_grad()
        aux_opt.zero_grad()
        loss = rd_loss(model(x), x)
        loss.backward()
        opt.step()
        aux = model.aux_loss()
        aux.backward()
        aux_opt.step()
        losses.append(loss.item())
        aux_losses.append(aux.item())
    return name, model, losses, aux_losses


def test_forward_shapes_and_likelihoods(trained) -> None:
    name, model, _, _ = trained
    x = astronaut()
    assert x.shape[-1] % model.pad_multiple == 0
    model.train()
    out = model(x)
    assert out["x_hat"].shape == (1, 3, 128, 128)
    assert out["features"].shape == (1, FEATURE_CHANNELS, 128, 128)
    assert set(out["likelihoods"]) == LIKELIHOOD_KEYS[name]
    for lik in out["likelihoods"].values():
        assert torch.isfinite(lik).all()
        assert (lik > 0).all() and (lik <= 1).all()


def test_training_steps_and_aux_loss(trained) -> None:
    _, model, losses, aux_losses = trained
    assert all(math.isfinite(v) for v in losses + aux_losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(n.endswith(".quantiles") for n, _ in model.named_parameters())
    assert aux_losses[-1] < aux_losses[0]


def test_real_coding_is_exact(trained) -> None:
    name, model, _, _ = trained
    x = astronaut()
    model.update(force=True)
    model.eval()
    payload, y_enc = encoder_y_hat(model, x)
    assert payload.strings and all(isinstance(s, bytes) and len(s) > 0 for s in payload.strings)
    assert all(isinstance(v, int) for v in payload.shape)

    dec, y_dec = g_s_input(model, model.decompress, payload)
    # (d) the decoder rebuilds exactly the latents the encoder quantized
    assert torch.equal(y_dec, y_enc)

    # determinism: an independent model instance loaded from the state dict decodes the same bits
    other = build(name, seed=1)
    other.load_state_dict(model.state_dict())
    other.eval()
    again = other.decompress(LatentPayload([bytes(s) for s in payload.strings], list(payload.shape)))
    for key in ("x_hat", "features"):
        assert dec[key].shape == (1, 3 if key == "x_hat" else FEATURE_CHANNELS, 128, 128)
        assert torch.equal(dec[key], again[key])

    with torch.no_grad():
        fwd, y_fwd = g_s_input(model, model, x)
    if name in FORWARD_IS_DECODER:  # forward-with-rounding is the decoder
        assert torch.allclose(y_fwd, y_dec, atol=1e-4)
        for key in ("x_hat", "features"):
            assert torch.allclose(fwd[key], dec[key], atol=1e-4)
    else:  # joint_ar: round(y - mu) + mu vs. round(y) differ by at most one bin
        assert (y_fwd - y_dec).abs().max() <= 1 + 1e-4


@pytest.mark.parametrize("name", CODECS)
def test_real_coding_exact_with_wide_latents(name: str) -> None:
    """Untrained model with ``y`` scaled up 20x (many non-zero symbols): coding is still exact."""
    torch.set_num_threads(1)
    model = build(name)
    model.update(force=True)
    model.eval()
    model.g_a.register_forward_hook(lambda _m, _inputs, out: 20.0 * out)
    x = astronaut()
    payload, y_enc = encoder_y_hat(model, x)
    assert (y_enc.round() != 0).float().mean() > 0.5
    dec, y_dec = g_s_input(model, model.decompress, payload)
    assert torch.equal(y_dec, y_enc)
    if name in FORWARD_IS_DECODER:
        with torch.no_grad():
            fwd, y_fwd = g_s_input(model, model, x)
        assert torch.allclose(y_fwd, y_dec, atol=1e-4)
        assert torch.allclose(fwd["x_hat"], dec["x_hat"], atol=1e-4)


def test_gmm_coder_roundtrip_wide_latents() -> None:
    """The mixture coder is exact for spread-out latents and edge bins carry the tails."""
    torch.manual_seed(0)
    K, C, H, W = 3, 4, 5, 6
    codec = GaussianMixtureLatentCodec(K=K).eval()
    params = torch.cat([torch.randn(1, K * C, H, W), 20 * torch.randn(1, K * C, H, W),
                        3 * torch.rand(1, K * C, H, W)], dim=1)
    y = 25 * torch.randn(1, C, H, W)
    enc = codec.compress(y, params)
    assert torch.equal(enc["y_hat"], torch.round(y))
    dec = codec.decompress(enc["strings"], (H, W), params)
    assert torch.equal(dec["y_hat"], enc["y_hat"])

    weights, means, scales = codec._params(params)
    w, m, s, center = codec._tables(weights[0], means[0], scales[0])
    rows = gmm_pmf_rows(w, m, s, center - 3, 7)
    assert np.allclose(rows.sum(1), 1.0)
    y_int = (center - 3 + torch.arange(1, 6)[:, None]).t().float().reshape(1, C, H, W, 5)
    lik = torch.stack([gmm_likelihood(y_int[..., j], weights, means, scales) for j in range(5)], -1)
    assert np.allclose(rows[:, 1:6], lik.reshape(-1, 5).double().numpy(), atol=1e-6)

    small = GaussianMixtureLatentCodec(K=K, max_radius=2).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = small.compress(y, params)
    assert caught and (enc["y_hat"] - torch.round(y)).abs().max() > 0
    assert torch.equal(small.decompress(enc["strings"], (H, W), params)["y_hat"], enc["y_hat"])

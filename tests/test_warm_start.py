"""``init_weights=``: warm start from an exported model, a lossy-only model or a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nlic.errors import ModelError
from nlic.lightning.warm_start import load_init_weights
from nlic.residual.widen import widen_heads
from tests.conftest import TINY_CONFIG


def _fresh(seed: int = 5):
    from nlic.model_io import build_codec

    torch.manual_seed(seed)
    return build_codec(TINY_CONFIG)


def _same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "") -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items()
               if k.startswith(prefix) and not k.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table")))


def test_exported_model_loads_every_weight(tiny_model) -> None:
    from nlic.model_io import load_model

    source = load_model(tiny_model).codec
    target = _fresh()
    assert not _same(source, target)
    counts = load_init_weights(target, tiny_model)
    assert counts["mismatched"] == 0 and counts["fresh"] == 0
    assert _same(source, target)


def test_lossy_only_model_goes_into_the_lossy_layer(tmp_path) -> None:
    from nlic.eval.lossy import save_lossy_model
    from nlic.studies.codecs import build_lossy_codec

    # same widths as the tiny system's lossy layer, but a 1-channel feature head (lossy-only training)
    torch.manual_seed(1)
    lossy_cfg = {**TINY_CONFIG["lossy"], "feature_channels": 1}
    lossy = build_lossy_codec("mean_scale", feature_channels=1, N=16, M=24)
    save_lossy_model(lossy, {"lossy": lossy_cfg}, tmp_path / "lossy_model.pt")
    target = _fresh()
    residual_before = {k: v.clone() for k, v in target.residual.state_dict().items()}
    counts = load_init_weights(target, tmp_path / "lossy_model.pt")
    assert counts["mismatched"] >= 1  # the synthesis output differs in width (3 + 1 vs 3 + 8 channels)
    assert torch.equal(target.lossy.g_a[0].weight, lossy.g_a[0].weight)
    # ConvTranspose2d weight: [in, out, k, k]; the 3 image channels and the 1 feature channel survive
    out_w = [k for k, v in lossy.state_dict().items() if k.startswith("g_s") and v.dim() == 4][-1]
    src, dst = lossy.state_dict()[out_w], target.lossy.state_dict()[out_w]
    assert src.shape[1] == 4 and dst.shape[1] == 11
    assert torch.equal(dst[:, :4], src) and not torch.equal(dst[:, 4:], torch.zeros_like(dst[:, 4:]))
    assert all(torch.equal(v, target.residual.state_dict()[k]) for k, v in residual_before.items())


def test_warm_started_codec_still_codes_exactly(tmp_path, tiny_model, photo) -> None:
    from nlic.coding.image import ImageCodec
    from nlic.model_io import LoadedModel, calibrate_codec

    target = _fresh().eval()
    load_init_weights(target, tiny_model)
    target.lossy.update(force=True)
    codec = ImageCodec(LoadedModel(target, TINY_CONFIG, calibrate_codec(target), b"warmtest", tmp_path),
                       stored_fallback=False)
    for tau in (0, 2):
        out = codec.decompress(codec.compress(photo, tau).data).pixels
        err = abs(out.astype(int) - photo.astype(int)).max()
        assert err <= tau and (tau or err == 0)


@pytest.mark.parametrize("content", [b"not a torch file", None])
def test_bad_files_are_model_errors(tmp_path, content) -> None:
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError):
        load_init_weights(_fresh(), path)
    torch.save({"state_dict": {"unrelated.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="matches"):
        load_init_weights(_fresh(), tmp_path / "other.pt")


def test_flow_loss_weights_distortion_by_its_step() -> None:
    """The flow trains with bpp + kappa * MSE / delta^2 (one model, every rate); other codecs with lambda."""
    from nlic.codecs.flow import FLOW_KAPPA
    from nlic.studies.codecs import build_lossy_codec

    bpp, mse = torch.tensor(2.0), torch.tensor([1e-4, 4e-4])
    flow = build_lossy_codec("flow", feature_channels=1)
    delta = torch.tensor([0.01, 0.02]).reshape(2, 1, 1, 1)
    got = flow.rd_loss(bpp, mse, {"delta": delta}, lmbda=123.0)
    assert math.isclose(got.item(), 2.0 + FLOW_KAPPA * (1.0 + 1.0) / 2, rel_tol=1e-6)
    ms = build_lossy_codec("mean_scale", feature_channels=1)
    assert math.isclose(ms.rd_loss(bpp, mse, {}, lmbda=0.01).item(), 2.0 + 0.01 * 255**2 * 2.5e-4, rel_tol=1e-6)


def test_lossy_only_run_seeds_a_near_lossless_run(tmp_path, photo) -> None:
    """The issue-4 pipeline in miniature: flow trained alone -> lossy_model.pt -> near-lossless system
    warm-started from it (no logger at all) -> a model that codes within tau."""
    from nlic.api import load_codec
    from nlic.training import train
    from tests._runs import compose, train_in_process

    lossy_dir = tmp_path / "lossy"
    train_in_process(["experiment=lossy_only", "lossy=flow", "debug=smoke", "evaluate.enabled=false"], lossy_dir)
    seed = lossy_dir / "lossy_model.pt"
    assert seed.is_file()
    run = tmp_path / "nl"
    cfg = compose(["lossy=flow", "debug=smoke", "logger=none", "evaluate.enabled=false", "demo=false",
                   f"init_weights={seed}", f"paths.root_dir={run}", f"paths.output_dir={run}"])
    train(cfg)
    codec = load_codec(run / "model.pt", stored_fallback=False)
    for tau in (0, 3):
        out = codec.decompress(codec.compress(photo, tau).data).pixels
        err = abs(out.astype(int) - photo.astype(int)).max()
        assert err <= tau and (tau or err == 0)


def test_wider_and_deeper_head_starts_as_the_trained_one(tmp_path, photo) -> None:
    """A residual head grown in every size (context, trunk width and depth, channel layers) computes
    what the shipped model's head computed, for both heads and every tau, and its new units train."""
    from nlic.api import default_model_path
    from nlic.model_io import build_codec, load_model

    shipped = load_model(default_model_path())
    small = shipped.codec.eval()
    config = {**shipped.config, "residual": {**shipped.config["residual"], "context_channels": 80, "hidden": 72,
                                             "layers": 2, "channel_hidden": 40}}
    torch.manual_seed(3)
    wide = build_codec(config).eval()
    counts = load_init_weights(wide, default_model_path())
    assert counts["fresh"] == 0  # every tensor of the grown model came from the small one
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.pad(x, (0, 192 - x.shape[-1], 0, 128 - x.shape[-2]), mode="replicate")
    with torch.no_grad():
        for tau in (0, 1, 3):
            a, b = small.estimate(x, tau), wide.estimate(x, tau)
            assert torch.allclose(a["residual_bits"], b["residual_bits"], rtol=1e-4), tau
    # the grown blocks are not dead: a gradient step moves the zero-initialised weights
    wide.train()
    out = wide(x, torch.tensor([2]))
    out["residual_bits"].sum().backward()
    head = wide.residual.head
    assert head.trunk[1].weight.grad[:, 64:].abs().sum() > 0  # trunk.1 reads new units of trunk.0
    assert head.channel_in[0].weight.grad[:, 64:72].abs().sum() > 0
    with pytest.raises(ValueError, match="grow"):  # a smaller head cannot start from a larger one
        widen_heads(wide.state_dict(), small.state_dict())


def test_smaller_grey_heads_join_a_wide_model_grown(photo) -> None:
    """``nlic export WIDE --gray-heads SMALL``: grey heads smaller than the colour heads are grown to
    their sizes and compute what they computed (larger ones are refused)."""
    from types import SimpleNamespace

    from nlic.api import default_model_path
    from nlic.model_io import build_codec, load_model, with_gray_heads

    shipped = load_model(default_model_path())
    sizes = {"context_channels": 80, "hidden": 72, "layers": 2, "channel_hidden": 40}
    config = {**shipped.config, "residual": {**shipped.config["residual"], **sizes, "gray_heads": False}}
    torch.manual_seed(4)
    wide = SimpleNamespace(codec=build_codec(config).eval(), config=config)
    codec, joined = with_gray_heads(wide, shipped)
    assert joined["residual"]["gray_heads"] and joined["residual"]["hidden"] == 72
    grey = torch.from_numpy(photo[..., 1].astype(np.float32))[None, None].repeat(1, 3, 1, 1) - 128.0
    for name in ("gray_head", "gray_tau_head"):
        small, grown = getattr(shipped.codec.residual, name), getattr(codec.residual, name)
        tau_index = torch.tensor([1]) if small.num_taus else None
        outs = []
        for head in (small, grown):
            pre = head.context_full(grey)
            trunk = head.trunk_features(pre, None, tau_index)
            outs.append([head.channel_params(c, trunk, pre, pre[..., -3:] * 0, tau_index) for c in range(3)])
        for a, b in zip(*outs):
            for field in ("logits", "means", "log_scales"):
                assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-4), (name, field)
    with pytest.raises(ModelError, match="may be smaller"):
        with_gray_heads(shipped, SimpleNamespace(codec=wide.codec, config=config))

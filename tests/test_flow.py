"""Normalizing-flow codec (nlic.codecs.flow) and the re-encoding study (nlic reencode)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from nlic.codecs.base import LatentPayload
from nlic.codecs.flow import AffineCoupling, FlowCodec, bits_to_delta, delta_to_bits, delta_weighted_loss
from nlic.rate import latent_bits

TINY = {
    "steps_per_level": [1, 1, 1, 1],
    "hidden_channels": [8, 8, 8, 8],
    "hyper_channels": 16,
    "feature_channels": 4,
    "feature_hidden": 8,
}


def flow_rd_loss(x: torch.Tensor, out: dict) -> dict:
    """The flow's training loss on a batch (bpp of the likelihoods, per-sample MSE on the [0, 1] scale)."""
    b, _, h, w = x.shape
    bpp = latent_bits(out["likelihoods"], b, x.device).sum() / (b * h * w)
    mse = ((out["x_hat"] - x) ** 2).mean(dim=(1, 2, 3))
    return {"loss": delta_weighted_loss(bpp, mse, out["delta"]), "bpp": bpp, "mse": mse.mean()}


def tiny_flow(seed: int = 0) -> FlowCodec:
    torch.manual_seed(seed)
    return FlowCodec(**TINY)


def perturb(model: FlowCodec, std: float = 0.05) -> FlowCodec:
    """Make the identity-initialised couplings/actnorms non-trivial."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.flow.named_parameters():
            if "coupling.net.2" in name or "actnorm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:164, 150:214])


@pytest.fixture(scope="module")
def x64(astronaut: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(astronaut.copy()).permute(2, 0, 1)[None].float() / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(((a.clamp(0, 1) - b) ** 2).mean()))


def test_flow_is_invertible(x64: torch.Tensor) -> None:
    model = perturb(tiny_flow()).eval()
    with torch.no_grad():
        y = model.analysis(x64)
        x_rec = model.synthesis(y)
    assert y.shape == (1, 768, 4, 4) and y.numel() == x64.numel()
    assert not torch.allclose(y, model.analysis(x64 * 0.5))  # not degenerate
    assert (x_rec - x64).abs().max().item() < 1e-4


def test_coupling_scale_is_bounded() -> None:
    layer = AffineCoupling(12, 8, log_scale_bound=1.0)
    with torch.no_grad():
        layer.net[-1].weight[:6].normal_(0, 100.0)  # the log-scale half only
        x = torch.randn(1, 12, 4, 4)
        ratio = (layer(x)[:, 6:] - layer(torch.zeros_like(x))[:, 6:]).abs()
        log_s, _ = layer._scale_shift(x[:, :6])
    assert log_s.abs().max().item() <= 1.0 + 1e-6
    assert torch.isfinite(ratio).all()
    assert torch.allclose(layer.inverse(layer(x)), x, atol=1e-5)


def test_delta_code_round_trips() -> None:
    for d in (0.03, 1e-4, 0.25, 3.0):
        bits = delta_to_bits(d)
        assert 0 <= bits < 2**31
        assert bits_to_delta(bits) == float(np.float32(d))
    with pytest.raises(ValueError):
        delta_to_bits(0.0)


@pytest.fixture(scope="module")
def coded(x64: torch.Tensor) -> dict:
    """Encoder reconstruction, payload and decoder output at three deltas."""
    model = perturb(tiny_flow())
    model.update(force=True)
    model.eval()
    out = {}
    with torch.no_grad():
        for delta in (0.1, 0.03, 0.01):
            model.delta = delta
            enc = model(x64)
            payload = model.compress_latents(x64)
            wire = LatentPayload([bytes(s) for s in payload.strings], [int(v) for v in payload.shape])
            model.delta = 0.5  # the decoder must read delta from the payload, not from the model
            dec = model.decompress_latents(wire)
            out[delta] = {"enc": enc, "dec": dec, "bytes": sum(len(s) for s in wire.strings)}
    return out


def test_decoder_reproduces_encoder_exactly(coded: dict) -> None:
    for res in coded.values():
        assert torch.equal(res["dec"]["x_hat"], res["enc"]["x_hat"])
        assert torch.equal(res["dec"]["features"], res["enc"]["features"])
        assert res["dec"]["features"].shape == (1, 4, 64, 64)


def test_quality_improves_as_delta_shrinks(coded: dict, x64: torch.Tensor) -> None:
    q = [psnr(coded[d]["dec"]["x_hat"], x64) for d in (0.1, 0.03, 0.01)]
    assert q[0] < q[1] < q[2]
    assert q[2] > 45.0  # nothing is discarded before quantization


def test_rate_grows_monotonically_as_delta_shrinks(coded: dict) -> None:
    sizes = [coded[d]["bytes"] for d in (0.1, 0.03, 0.01)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_training_steps_without_nan(astronaut: np.ndarray) -> None:
    torch.manual_seed(0)
    model = tiny_flow()
    img = torch.from_numpy(astronaut.copy()).permute(2, 0, 1).float() / 255.0
    x = torch.stack([img, img.flip(-1)])
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt, aux_opt = torch.optim.Adam(main, 1e-3), torch.optim.Adam(aux, 1e-3)
    model.train()
    for _ in range(3):
        out = model(x)
        assert out["delta"].shape == (2, 1, 1, 1)
        assert model.delta_min <= out["delta"].min() and out["delta"].max() <= model.delta_max
        loss = flow_rd_loss(x, out)
        opt.zero_grad()
        aux_opt.zero_grad()
        loss["loss"].backward()
        model.aux_loss().backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        aux_opt.step()
        assert torch.isfinite(loss["loss"]) and torch.isfinite(loss["bpp"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_model_file_save_load_resizes_entropy_buffers(tmp_path, x64: torch.Tensor) -> None:
    from nlic.eval.lossy import save_lossy_model
    from nlic.studies.codecs import load_lossy_codec

    config = {"lossy": {"_target_": "nlic.codecs.flow.FlowCodec", **TINY, "delta": 0.05}}
    model = perturb(tiny_flow())
    model.eval()
    save_lossy_model(model, config, tmp_path / "flow.pt")
    loaded = load_lossy_codec(tmp_path / "flow.pt")
    assert isinstance(loaded, FlowCodec) and loaded.delta == 0.05 and not loaded.training
    assert loaded.gaussian_conditional._quantized_cdf.shape == model.gaussian_conditional._quantized_cdf.shape
    model.delta = loaded.delta
    with torch.no_grad():
        p1, p2 = model.compress_latents(x64), loaded.compress_latents(x64)
        assert p1.strings == p2.strings and p1.shape == p2.shape
        assert torch.equal(loaded.decompress_latents(p1)["x_hat"], model(x64)["x_hat"])


def test_load_rejects_foreign_file(tmp_path) -> None:
    from nlic.errors import ModelError
    from nlic.studies.codecs import load_lossy_codec

    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ModelError):
        load_lossy_codec(tmp_path / "x.pt")
    with pytest.raises(ModelError):
        load_lossy_codec(tmp_path / "missing.pt")


def _write_png(path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img).save(path)


def test_reencode_command_writes_table_and_plot(tmp_path, astronaut: np.ndarray) -> None:
    from nlic.cli.main import main

    _write_png(tmp_path / "img.png", astronaut)
    out = tmp_path / "out"
    code = main([
        "reencode", str(tmp_path / "img.png"), "--generations", "2", "--codecs", "jpeg,flow",
        "--allow-untrained", "--quality", "jpeg=80,flow=0.02", "--out", str(out), "--quiet",
    ])
    assert code == 0
    with (out / "reencode.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["codec"], r["generation"]) for r in rows] == [
        ("jpeg", "1"), ("jpeg", "2"), ("flow", "1"), ("flow", "2")]
    assert {"psnr", "bpp", "setting", "psnr_prev"} <= set(rows[0])
    flow = [r for r in rows if r["codec"] == "flow"]
    assert all(float(r["bpp"]) > 0 and float(r["psnr"]) > 35 for r in flow)
    assert abs(float(flow[1]["psnr"]) - float(flow[0]["psnr"])) < 0.5  # stable over generations
    assert "| generation | codec |" in (out / "reencode.md").read_text()
    assert (out / "reencode_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reencode_needs_a_checkpoint_or_allow_untrained(tmp_path, astronaut, capsys) -> None:
    from nlic.cli.main import main

    _write_png(tmp_path / "img.png", astronaut)
    code = main(["reencode", str(tmp_path / "img.png"), "--codecs", "flow", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--allow-untrained" in capsys.readouterr().err
    assert main(["reencode", str(tmp_path / "img.png"), "--codecs", "jpeg", "--quality", "flow=0.1",
                 "--out", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_reencode_logs_to_wandb_offline(tmp_path, astronaut, monkeypatch) -> None:
    from nlic.cli.main import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _write_png(tmp_path / "img.png", astronaut)
    out = tmp_path / "out"
    code = main(["reencode", str(tmp_path / "img.png"), "--generations", "2", "--codecs", "jpeg,jpegxl",
                 "--out", str(out), "--wandb", "--quiet"])
    assert code == 0
    assert list((out / "wandb").glob("offline-run-*"))


def test_wandb_table_takes_a_fixed_point_after_finite_rows(tmp_path, monkeypatch) -> None:
    """A codec at a fixed point has PSNR-to-previous = inf after finite generations (the flow does)."""
    from nlic.studies.reencode import GenerationResult, log_to_wandb, plot_results

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rows = [GenerationResult(1, "flow", "delta=0.1", 30.0, 30.0, 1.5, 100),
            GenerationResult(2, "flow", "delta=0.1", 29.9, 55.0, 1.5, 100),
            GenerationResult(3, "flow", "delta=0.1", 29.9, math.inf, 1.5, 100)]
    plot = plot_results(rows, tmp_path / "p.png")
    log_to_wandb(rows, plot, tmp_path, {"test": True})
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_compress_lossy_step_is_chosen_at_encode_time(tmp_path, tiny_model, capsys) -> None:
    """A flow-based near-lossless model: --lossy-step changes the learned file (--learned-only: an
    untrained model's tile would otherwise be stored as PNG at either step), the decoder reads the step
    from it, and the bound holds; a model without a step refuses the option in one line."""
    from skimage import data as skdata

    from nlic.cli.main import main
    from tests.conftest import TINY_CONFIG, make_tiny_model

    img = np.ascontiguousarray(skdata.coffee()[100:180, 200:300])
    _write_png(tmp_path / "in.png", img)
    config = {"lossy": {"_target_": "nlic.codecs.flow.FlowCodec", **TINY, "feature_channels": 8},
              "residual": TINY_CONFIG["residual"]}
    model = make_tiny_model(tmp_path / "flow_nl.pt", config=config)
    sizes = {}
    for step in (0.01, 0.2):
        out = tmp_path / f"s{step}.nlic"
        assert main(["compress", str(tmp_path / "in.png"), str(out), "--tau", "2", "--model", str(model),
                     "--lossy-step", str(step), "--learned-only"]) == 0
        assert main(["decompress", str(out), str(tmp_path / f"s{step}.png"), "--model", str(model)]) == 0
        from PIL import Image

        dec = np.asarray(Image.open(tmp_path / f"s{step}.png").convert("RGB"))
        assert np.abs(dec.astype(int) - img.astype(int)).max() <= 2
        sizes[step] = out.stat().st_size
    assert sizes[0.01] != sizes[0.2]
    capsys.readouterr()
    code = main(["compress", str(tmp_path / "in.png"), str(tmp_path / "x.nlic"), "--model", str(tiny_model),
                 "--lossy-step", "0.1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "no quantization step" in err and "\n" not in err
    assert not (tmp_path / "x.nlic").exists()


@pytest.mark.parametrize("step", ["0", "-0.1", "nan", "inf"])
def test_compress_rejects_a_bad_lossy_step(tmp_path, astronaut, capsys, step) -> None:
    from nlic.cli.main import main

    _write_png(tmp_path / "in.png", astronaut)
    code = main(["compress", str(tmp_path / "in.png"), str(tmp_path / "o.nlic"), f"--lossy-step={step}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--lossy-step must be a positive number" in err and "\n" not in err
    assert not (tmp_path / "o.nlic").exists()

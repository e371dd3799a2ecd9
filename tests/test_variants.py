"""Every variant a config away: each ``lossy=`` trains inside the near-lossless system and round-trips
a real image through a file within tau; each ``residual=`` mask composes and codes; bias
correction, tau sets, lambda and K are plain overrides; every lossy codec trains and codes alone
(``experiment=lossy_only``).  Run with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests._runs import (
    MASKS,
    astronaut,
    compose,
    lossy_variants,
    roundtrip_through_file,
    train_in_process,
)

SMOKE = ["debug=smoke"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_roundtrip(model_path, work, taus=(0, 2)) -> None:
    img = astronaut()
    for tau in taus:
        restored, nbytes = roundtrip_through_file(model_path, img, tau, work)
        assert restored.shape == img.shape and restored.dtype == np.uint8
        err = int(np.abs(restored.astype(np.int16) - img.astype(np.int16)).max())
        assert err <= tau, f"max error {err} > tau {tau}"
        if tau == 0:
            np.testing.assert_array_equal(restored, img)
        assert nbytes > 0


# ------------------------------------------------------------------ lossy variants in the system
@pytest.mark.parametrize("lossy", lossy_variants())
def test_lossy_variant_trains_and_roundtrips(lossy, tmp_path):
    run = tmp_path / "run"
    metrics = train_in_process([f"lossy={lossy}", *SMOKE, "evaluate.enabled=false"], run)
    assert math.isfinite(metrics["train/loss"])
    for tau in range(6):  # validation at every tau of the default tau set (0to5)
        assert metrics[f"val/max_err_tau{tau}"] <= tau
        assert math.isfinite(metrics[f"val/bpp_tau{tau}"])
    assert (run / "model.pt").is_file()
    _check_roundtrip(run / "model.pt", tmp_path)


# ------------------------------------------------------------------ context masks
def _untrained_model(overrides: list[str], path):
    """Coding is exact whatever the weights: build the composed model and export it untrained."""
    from omegaconf import OmegaConf

    from nlic.model_io import build_codec, save_model

    cfg = compose(overrides)
    config = OmegaConf.to_container(cfg.model.model_config, resolve=True)
    torch.manual_seed(0)
    codec = build_codec(config)
    save_model(codec, config, path)
    return codec


@pytest.mark.parametrize(
    "mask", [pytest.param(m, marks=pytest.mark.slow) if m == "serial" else m for m in MASKS]
)
def test_mask_composes_and_codes(mask, tmp_path):
    from nlic.residual.masks import MASK_SLOPES

    codec = _untrained_model([f"residual={mask}", *SMOKE], tmp_path / "model.pt")
    assert mask in MASK_SLOPES
    assert (len(codec.residual.head.taps) == 0) == (mask == "none")
    _check_roundtrip(tmp_path / "model.pt", tmp_path, taus=(2,))  # tau 0: every lossy test above


def test_serial_mask_composes():
    cfg = compose(["residual=serial", *SMOKE])
    assert cfg.residual.mask == "serial"


# ------------------------------------------------------------------ plain overrides
@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["bias_correction=off"], {"bias_correction.enabled": False, "model.bias_taus": [],
                                   "residual.bias_correction": False}),
        (["bias_correction=on"], {"bias_correction.enabled": True, "model.bias_taus": [1, 2, 3, 4, 5]}),
        (["tau=lossless"], {"tau.values": [0], "evaluate.taus": [0], "model.val_taus": [0]}),
        (["tau=0to5"], {"tau.values": [0, 1, 2, 3, 4, 5]}),
        (["tau=0to10"], {"tau.values": list(range(11)), "model.val_taus": list(range(11))}),
        (["tau=custom", "tau.values=[0,2,7]"], {"tau.values": [0, 2, 7], "evaluate.taus": [0, 2, 7]}),
        (["lmbda=0.1"], {"lmbda": 0.1, "model.lmbda": 0.1}),
        (["residual.mixtures=3"], {"residual.mixtures": 3, "model.model_config.residual.mixtures": 3}),
        (["residual=p", "residual.mixtures=10"], {"residual.mask": "p", "residual.mixtures": 10}),
        (["experiment=lossy_only", "lossy=c2f", "lmbda=0.02"],
         {"model.lmbda": 0.02, "task_name": "lossy_only", "model.lossy_config.N": 64}),
    ],
)
def test_plain_overrides_compose(overrides, expect):
    from omegaconf import OmegaConf

    cfg = compose(overrides)
    for key, value in expect.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got
        assert got == value, f"{key}: {got!r} != {value!r}"


def test_mixtures_and_bias_build_the_model():
    from hydra.utils import instantiate

    for bias in ("on", "off"):
        cfg = compose([f"bias_correction={bias}", "residual.mixtures=2", *SMOKE])
        module = instantiate(cfg.model)
        assert module.codec.residual.mixtures == 2
        assert (module.codec.residual.tau_head is not None) == (bias == "on")


def test_custom_tau_set_trains_and_codes_every_tau(tmp_path):
    """tau=custom tau.values=[0,2,7] with K=1 and lambda=0: validation and real coding at each tau."""
    metrics = train_in_process(
        ["tau=custom", "tau.values=[0,2,7]", "residual.mixtures=1", "lmbda=0", *SMOKE,
         "evaluate.taus=${tau.values}"], tmp_path,
    )
    summary = json.loads((tmp_path / "eval_results.json").read_text())["summary"]
    for tau in (0, 2, 7):
        for key in ("bpp", "bpsp", "psnr", "max_err"):
            assert f"val/{key}_tau{tau}" in metrics
        assert summary[f"bound_ok_tau{tau}"] and summary[f"max_err_tau{tau}"] <= tau
    assert "val/bpp_tau1" not in metrics


# ------------------------------------------------------------------ lossy-only mode
@pytest.mark.parametrize("lossy", lossy_variants())
def test_lossy_only_trains_and_codes(lossy, tmp_path):
    from nlic.eval.lossy import compress_image, decompress_image, load_lossy_model

    metrics = train_in_process(["experiment=lossy_only", f"lossy={lossy}", "lmbda=0.01", *SMOKE], tmp_path)
    for key in ("val/bpp", "val/psnr", "val/ms_ssim", "val/loss", "eval/bpp", "eval/psnr", "eval/ms_ssim"):
        assert math.isfinite(metrics[key]), key
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["mode"] == "lossy"
    row = results["rows"][0]
    for key in ("bpp", "bpsp", "psnr", "ms_ssim", "max_err", "enc_s_per_mp", "dec_s_per_mp", "bytes"):
        assert key in row
    assert row["bpp"] == pytest.approx(8 * row["bytes"] / (row["width"] * row["height"]))
    assert not (tmp_path / "model.pt").exists()

    # real bytes through a file, decoded by a separately loaded model: the decoder's image
    img = astronaut()
    encoder, _ = load_lossy_model(tmp_path / "lossy_model.pt")
    path = tmp_path / "image.nly"
    path.write_bytes(compress_image(encoder, img))
    decoder, _ = load_lossy_model(tmp_path / "lossy_model.pt")
    rec = decompress_image(decoder, path.read_bytes())
    assert rec.shape == img.shape and rec.dtype == np.uint8
    np.testing.assert_array_equal(rec, decompress_image(encoder, path.read_bytes()))


def test_lossy_payload_roundtrip_and_errors():
    from nlic.codecs.base import LatentPayload
    from nlic.errors import BitstreamError
    from nlic.eval.lossy import pack_payload, unpack_payload

    payload = LatentPayload([b"abc", b"", bytes(range(256)) * 3], [4, 300, 1])
    data = pack_payload(payload, 70, 90000)
    back, h, w = unpack_payload(data)
    assert (back.strings, back.shape, h, w) == (payload.strings, payload.shape, 70, 90000)
    with pytest.raises(BitstreamError):
        unpack_payload(data[:-5])
    with pytest.raises(BitstreamError):
        unpack_payload(b"XXXX" + data[4:])


def test_ms_ssim_small_and_standard_sizes():
    from pytorch_msssim import ms_ssim as reference

    from nlic.eval.metrics import ms_ssim, ms_ssim_levels

    torch.manual_seed(0)
    a = torch.rand(1, 3, 192, 192) * 255
    b = (a + torch.randn_like(a) * 8).clamp(0, 255)
    assert float(ms_ssim(a, b)) == pytest.approx(float(reference(a, b, data_range=255)), abs=1e-6)
    assert [ms_ssim_levels(s, s) for s in (8, 22, 64, 128, 161)] == [1, 2, 3, 4, 5]
    for s in (8, 64, 70):
        assert float(ms_ssim(a[..., :s, :s], a[..., :s, :s])) == pytest.approx(1.0, abs=1e-5)
        assert 0 < float(ms_ssim(a[..., :s, :s], b[..., :s, :s])) < 1


def test_lossy_model_file_errors(tmp_path):
    from nlic.codecs.mean_scale import MeanScaleHyperprior
    from nlic.errors import ModelError
    from nlic.eval.lossy import load_lossy_model, save_lossy_model

    config = {"lossy": {"_target_": "nlic.codecs.mean_scale.MeanScaleHyperprior", "N": 16, "M": 24,
                        "feature_channels": 1}}
    path = tmp_path / "lossy_model.pt"
    save_lossy_model(MeanScaleHyperprior(16, 24, 1), config, path)
    assert isinstance(load_lossy_model(path)[0], MeanScaleHyperprior)
    blob = torch.load(path, weights_only=True)
    blob["config"]["lossy"]["_target_"] = "os.system"
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="refusing"):
        load_lossy_model(tmp_path / "evil.pt")
    torch.save({"format": "nlic-model"}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an nlic lossy-only model"):
        load_lossy_model(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not found"):
        load_lossy_model(tmp_path / "missing.pt")

"""Quantizer, PMF and context-mask properties of the residual model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlic.residual.masks import MASK_SLOPES, context_taps, schedule
from nlic.residual.mixture import MixtureParams, bin_edges, component_log_mass, joint_log_likelihood
from nlic.residual.quantizer import quantize_residual


@pytest.mark.parametrize("tau", range(0, 8))
def test_quantizer_bound_and_grid(tau: int) -> None:
    r = torch.arange(-255, 256)
    q = quantize_residual(r, tau)
    assert (r - q).abs().max().item() <= tau
    assert torch.all(q % (2 * tau + 1) == 0)
    assert torch.equal(q, -quantize_residual(-r, tau))  # symmetric


def test_quantizer_per_item_tau() -> None:
    r = torch.randint(-255, 256, (4, 3, 8, 8))
    taus = torch.tensor([0, 1, 3, 5]).view(-1, 1, 1, 1)
    q = quantize_residual(r, taus)
    for i, t in enumerate([0, 1, 3, 5]):
        assert torch.equal(q[i], quantize_residual(r[i], t))


def _pmf_over_bins(tau: int, x_hat: float, params: MixtureParams, channel: int) -> torch.Tensor:
    """Mass of every reachable bin for one sample (R channel, no coupling)."""
    lo_b = quantize_residual(torch.tensor(-x_hat), tau)
    hi_b = quantize_residual(torch.tensor(255.0 - x_hat), tau)
    w = 2 * tau + 1
    centres = torch.arange(int(lo_b), int(hi_b) + 1, w).double()
    lo, hi = bin_edges(centres, tau, lo_b.double(), hi_b.double())
    return component_log_mass(
        lo[:, None], hi[:, None], params.means[0, channel][None], params.log_scales[0, channel][None]
    ).exp()


@pytest.mark.parametrize("tau", [0, 1, 2, 5, 17])
@pytest.mark.parametrize("x_hat", [0.0, 3.0, 128.0, 250.0, 255.0])
def test_bin_pmf_sums_to_one(tau: int, x_hat: float) -> None:
    torch.manual_seed(tau)
    params = MixtureParams.from_raw(torch.randn(1, 50).double(), 5)
    mass = _pmf_over_bins(tau, x_hat, params, 0)  # [bins, K]
    assert torch.allclose(mass.sum(0), torch.ones(5, dtype=torch.float64), atol=1e-9)
    assert torch.all(mass >= 0)


@pytest.mark.parametrize("tau", [30, 40, 60])
def test_joint_likelihood_normalised_over_rgb(tau: int) -> None:
    """Summed over every (r, g, b) bin triple, the coupled mixture has total mass 1.

    Wide bins keep the enumeration of the joint alphabet small; tau = 0 uses the same code path.
    """
    torch.manual_seed(tau)
    params = MixtureParams.from_raw(torch.randn(1, 30).double() * 0.3, 3)
    x_hat = torch.tensor([252.0, 2.0, 128.0]).double()
    lo_b = quantize_residual(-x_hat, tau)
    hi_b = quantize_residual(255 - x_hat, tau)
    w = 2 * tau + 1
    axes = [torch.arange(int(lo_b[c]), int(hi_b[c]) + 1, w).double() for c in range(3)]
    grids = torch.meshgrid(*axes, indexing="ij")
    r = torch.stack([g.flatten() for g in grids], -1)
    lo, hi = bin_edges(r, tau, lo_b.expand_as(r), hi_b.expand_as(r))
    p = MixtureParams(*(t.expand(len(r), *t.shape[1:]) for t in (params.logits, params.means,
                                                                  params.log_scales, params.coeffs)))
    total = joint_log_likelihood(p, r, r, lo, hi).exp().sum()
    assert abs(total.item() - 1.0) < 1e-9


def test_gradients_finite_at_tails() -> None:
    lo = torch.tensor([-float("inf"), -0.5, 10.5])
    hi = torch.tensor([0.5, float("inf"), 11.5])
    mean = torch.zeros(3, requires_grad=True)
    log_s = torch.zeros(3, requires_grad=True)
    component_log_mass(lo, hi, mean, log_s).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_s.grad).all()


EXPECTED_STEPS = {"5p": 316, "4p": 253, "3p": 190, "2p": 127, "p": 64, "serial": 4096, "none": 1}


@pytest.mark.parametrize("mask", sorted(MASK_SLOPES))
def test_schedule_covers_patch_and_respects_context(mask: str) -> None:
    steps = schedule(mask, 64)
    assert len(steps) == EXPECTED_STEPS[mask]
    when = -np.ones((64, 64), dtype=int)
    for t, (rows, cols) in enumerate(steps):
        assert np.all(when[rows, cols] == -1)
        when[rows, cols] = t
    assert np.all(when >= 0)  # every pixel decoded exactly once
    big = np.full((64 + 6, 64 + 6), -1)  # outside the patch: "decoded" before everything
    big[3:-3, 3:-3] = when
    for di, dj in context_taps(mask):
        neighbour = big[3 + di : 3 + di + 64, 3 + dj : 3 + dj + 64]
        assert np.all(neighbour < when), (mask, di, dj)


def test_3p_drops_two_taps_of_type_a() -> None:
    assert len(context_taps("5p")) == 24
    assert set(context_taps("5p")) - set(context_taps("3p")) == {(-1, 2), (-1, 3)}

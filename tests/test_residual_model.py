"""Quantizer, PMF and context-mask properties of the residual model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlic.entropy.pmf import CDF_BITS, BinParams, tables, window_pmf
from nlic.entropy.pmf import MEAN_STEPS as BIN_STEPS
from nlic.residual.integer import (
    EXACT_LIMIT,
    LOG_SCALE_MIN,
    LOG_SCALE_STEPS,
    MEAN_STEPS,
    WEIGHT_MAX,
    calibrate,
    integer_head,
)
from nlic.residual.masks import MASK_SLOPES, context_taps, schedule
from nlic.residual.mixture import MixtureParams, bin_edges, component_log_mass, log_likelihood
from nlic.residual.network import ResidualNetwork
from nlic.residual.patches import patchify
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


def _bin_masses(tau: int, x_hat: float, params: MixtureParams) -> torch.Tensor:
    """Mass of every reachable bin for one sample, per component ``[bins, K]``."""
    lo_b = quantize_residual(torch.tensor(-x_hat), tau)
    hi_b = quantize_residual(torch.tensor(255.0 - x_hat), tau)
    w = 2 * tau + 1
    centres = torch.arange(int(lo_b), int(hi_b) + 1, w).double()
    lo, hi = bin_edges(centres, tau, lo_b.double(), hi_b.double())
    return component_log_mass(lo[:, None], hi[:, None], params.means, params.log_scales).exp()


@pytest.mark.parametrize("tau", [0, 1, 2, 5, 17])
@pytest.mark.parametrize("x_hat", [0.0, 3.0, 128.0, 250.0, 255.0])
def test_bin_pmf_sums_to_one(tau: int, x_hat: float) -> None:
    torch.manual_seed(tau)
    params = MixtureParams.from_raw(torch.randn(1, 15).double(), torch.randn(1).double() * 10)
    mass = _bin_masses(tau, x_hat, params)  # [bins, K]
    assert torch.allclose(mass.sum(0), torch.ones(5, dtype=torch.float64), atol=1e-9)
    assert torch.all(mass >= 0)
    total = log_likelihood(params, *bin_edges(
        torch.arange(int(quantize_residual(torch.tensor(-x_hat), tau)),
                     int(quantize_residual(torch.tensor(255.0 - x_hat), tau)) + 1, 2 * tau + 1).double(),
        tau, quantize_residual(torch.tensor(-x_hat), tau).double(),
        quantize_residual(torch.tensor(255.0 - x_hat), tau).double())).exp().sum()
    assert abs(total.item() - 1.0) < 1e-9


def test_gradients_finite_at_tails() -> None:
    lo = torch.tensor([-float("inf"), -0.5, 10.5])
    hi = torch.tensor([0.5, float("inf"), 11.5])
    mean = torch.zeros(3, requires_grad=True)
    log_s = torch.zeros(3, requires_grad=True)
    component_log_mass(lo, hi, mean, log_s).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_s.grad).all()


def _network(seed: int = 0, features: int = 0) -> ResidualNetwork:
    torch.manual_seed(seed)
    net = ResidualNetwork(feature_channels=features, mixtures=3, context_channels=16, hidden=16, layers=1,
                          channel_hidden=8)
    with torch.no_grad():  # non-trivial outputs (the output layers start at zero)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


def test_channel_heads_see_only_earlier_channels_of_the_pixel() -> None:
    """R's mixture ignores the pixel's own values, G's depends on R only, B's on R and G."""
    head = _network().head
    r = torch.randint(-128, 128, (1, 3, 64, 64)).float()
    pre = head.context_full(r)
    trunk = head.trunk_features(pre, None, None)
    current = r.permute(0, 2, 3, 1)
    for c in range(3):
        base = head.channel_params(c, trunk, pre, current, None).means
        for other in range(3):
            changed = current.clone()
            changed[..., other] += 17
            moved = not torch.equal(head.channel_params(c, trunk, pre, changed, None).means, base)
            assert moved == (other < c), (c, other)


def _calibrated(net: ResidualNetwork, features: int = 0) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
    from skimage import data

    x = torch.from_numpy(data.astronaut()[:128, :128]).permute(2, 0, 1)[None].float()
    r = x - 128
    feats = torch.randn(1, features, 128, 128) if features else None
    return r, calibrate(net, [r], [feats]), feats


@pytest.mark.parametrize("features", [0, 4])
def test_integer_network_whole_patch_equals_gathered(features: int) -> None:
    """The encoder's convolution and the decoder's gathered taps give the same integers."""
    net = _network(features=features)
    r, units, feats = _calibrated(net, features)
    for tau in (0, 2):
        head = integer_head(net, units, tau, 255)
        patches = patchify(quantize_residual(r, tau))
        f_int = None if feats is None else head.quantize_features(patchify(feats).permute(0, 2, 3, 1))
        act, skip = head.context_full(patches, f_int)
        ii, jj = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
        padded = torch.nn.functional.pad(patches, (3, 3, 3, 3))
        taps = torch.stack([padded[:, :, 3 + ii + di, 3 + jj + dj] for di, dj in head.offsets], -1)  # [P,3,S,S,T]
        taps = taps.permute(0, 2, 3, 4, 1).reshape(patches.shape[0], 64, 64, -1)
        act_g, skip_g = head.context_gathered(taps.reshape(-1, taps.shape[-1]),
                                              None if f_int is None else f_int.reshape(-1, f_int.shape[-1]))
        assert torch.equal(act.reshape(-1, act.shape[-1]), act_g)
        assert torch.equal(skip.reshape(-1, 3), skip_g)


def test_compiled_channel_table_equals_the_torch_layers() -> None:
    """The decoder's compiled channel heads give the torch path's integers, bit for bit, on real
    residuals and on inputs at their limits (where rounding and clamping decide)."""
    net = _network()
    r, units, _ = _calibrated(net)
    for tau in (0, 3):
        head = integer_head(net, units, tau, 255)
        patches = patchify(quantize_residual(r, tau))
        act, skip = head.context_full(patches)
        hidden = head.channel_hidden(head.trunk_features(act)).reshape(-1, head._hidden_at[-1])
        skip = skip.reshape(-1, 3)
        current = patches.permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float32)
        extreme = np.random.default_rng(tau).choice([-255.0, 255.0, 0.0], size=current.shape).astype(np.float32)
        for cur in (current, extreme):
            for c in range(3):
                # (a clone: the torch path requantizes channel 0's block of its argument in place)
                inputs = head.channel_inputs(c, hidden.clone(), skip, torch.from_numpy(cur))
                torch_table = head.channel_output(c, inputs).table
                compiled = head.channel_table(c, hidden, skip, cur)
                assert compiled.dtype == np.int32
                np.testing.assert_array_equal(compiled, torch_table.numpy())
        assert len(np.unique(compiled[:, -1])) > 3  # the log-scales vary: a real comparison


def test_integer_layers_are_provably_exact_in_float32() -> None:
    net = _network()
    _, units, _ = _calibrated(net)
    for tau in (0, 1, 5):
        head = integer_head(net, units, tau, 128)
        layers = [head.context, *head.trunk, *head.channel_in, *head.channel_out]
        for lin in layers:
            assert torch.equal(lin.weight, lin.weight.round()) and torch.equal(lin.bias, lin.bias.round())
            assert lin.weight.abs().max() <= WEIGHT_MAX
        assert head.context.bound([128] * head.context.weight.shape[1]).max() <= EXACT_LIMIT


def test_integer_params_follow_the_float_network() -> None:
    """Means within a few 1/16 pixel and scales within a few grid steps of the float mixture."""
    net = _network()
    r, units, _ = _calibrated(net)
    float_head = net.head
    head = integer_head(net, units, 0, 128)
    patches = patchify(r)
    pre = float_head.context_full(patches)
    trunk = float_head.trunk_features(pre, None, None)
    act, skip = head.context_full(patches)
    trunk_i = head.trunk_features(act)
    current = patches.permute(0, 2, 3, 1)
    for c in range(3):
        fp = float_head.channel_params(c, trunk, pre, current, None)
        ip = head.channel_params(c, trunk_i, skip, current)
        mean_err = (ip.means.float() / MEAN_STEPS - fp.means).abs()
        scale_err = (ip.log_scales.float() / LOG_SCALE_STEPS + LOG_SCALE_MIN - fp.log_scales).abs()
        assert mean_err.median() < 0.25 and scale_err.median() < 0.1, (c, mean_err.median(), scale_err.median())


def test_stored_table_vectors_are_what_decimal_computes(tmp_path, monkeypatch):
    """The packaged integers the PMF tables start from are decimal's, bit for bit (a constant changed
    without ``save_vectors``: this fails), and a stored file made under other constants is not read."""
    from nlic.entropy import pmf

    stored, computed = pmf.exact_vectors(), pmf.compute_vectors()
    assert pmf.VECTORS_FILE.exists() and stored.keys() == computed.keys()
    for name in computed:
        assert stored[name].dtype == computed[name].dtype and np.array_equal(stored[name], computed[name]), name
    stale = tmp_path / "stale.npz"
    np.savez(stale, key=pmf._vectors_key() + 1, **{k: v + 1 for k, v in computed.items()})
    monkeypatch.setattr(pmf, "VECTORS_FILE", stale)
    assert all(np.array_equal(pmf.exact_vectors()[k], v) for k, v in computed.items())


def reference_window_pmf(p: BinParams, start: np.ndarray, width: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The definition: every component's tabulated CDF at every bin edge, edges at or below ``lo``
    at 0 and above ``hi`` at 2**CDF_BITS (the tails folded into the end bins), weighted, differenced."""
    t = tables()
    edges = start[:, None] + np.arange(width + 1)[None, :]
    far = 1 << 20
    edges = np.where(edges <= lo[:, None], -far, np.where(edges > hi[:, None], far, edges))
    b = (p.means + BIN_STEPS // 2) // BIN_STEPS
    f = p.means + BIN_STEPS // 2 - BIN_STEPS * b
    reach = t.reach[p.rows]
    m = np.clip(edges[:, :, None] - b[:, None, :], (-reach - 1)[:, None, :], (reach + 1)[:, None, :])
    cdf = t.cdf_rows[m + (t.cdf_base[p.rows, f] + reach + 1)[:, None, :]]
    window = (np.diff(cdf, axis=1).astype(np.int64) * p.weights[:, None, :]).sum(-1)
    total = p.weights.sum(-1, keepdims=True) << CDF_BITS
    return np.concatenate([window, total - window.sum(-1, keepdims=True)], 1).astype(np.float64)


@pytest.mark.parametrize("K", [1, 3])
def test_window_pmf_equals_its_definition(K: int) -> None:
    """The compiled slice-of-precomputed-masses path (tails folded at the feasible ends) == the CDF
    of every component at every edge."""
    rng = np.random.default_rng(K)
    n = 2000
    weights = rng.integers(1, 4096, (n, K)) if K > 1 else np.ones((n, 1), dtype=np.int64)
    p = BinParams(weights, rng.integers(-600, 600, (n, K)), rng.integers(0, len(tables().reach), (n, K)))
    lo = rng.integers(-130, -20, n)
    hi = lo + rng.integers(0, 260, n)
    start = np.minimum(np.maximum(rng.integers(-60, 20, n), lo), hi)
    start = np.where(np.arange(n) % 7 == 0, lo, start)
    for width in (4, 32, 128, 512):
        fast = window_pmf(p, start, width, lo, hi)
        assert np.array_equal(fast, reference_window_pmf(p, start, width, lo, hi))
        assert np.array_equal(fast.sum(1), (weights.sum(1) << CDF_BITS).astype(np.float64))
        assert (fast >= 0).all()


def test_tables_are_cdfs_saturating_within_their_reach() -> None:
    """Every (scale, mean fraction) row is a CDF from exactly 0 to exactly 2**CDF_BITS; mixture
    weights fall with the logit gap."""
    t = tables()
    for row in range(len(t.reach)):
        for frac in (0, 7, 15):
            base, n = t.cdf_base[row, frac], 2 * t.reach[row] + 3
            cdf = t.cdf_rows[base : base + n]
            assert cdf[0] == 0 and cdf[-1] == 1 << CDF_BITS and (np.diff(cdf) >= 0).all(), (row, frac)
    assert t.weight[0] == 1 << 12 and (np.diff(t.weight) <= 0).all()


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


@pytest.mark.parametrize("mask", ["3p", "none"])
def test_decoding_order_is_wavefront_then_patch_then_pixel(mask: str) -> None:
    """The coder's decoding order (one compiled pass) is the definition: wavefront by wavefront,
    patch by patch, the schedule's pixels of the wavefront that are valid; a run ends per wavefront."""
    from types import SimpleNamespace

    from nlic.coding.residual import ResidualCoder

    coder = ResidualCoder(SimpleNamespace(offsets=context_taps(mask)), mask, 7)
    valid = torch.rand(5, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.3
    valid[1] = False  # a patch with nothing to code
    order, ends = coder._decode_order(valid)
    flat = valid.reshape(5, -1).numpy()
    want, want_ends = [], []
    for rows, cols in schedule(mask, 64):
        for p in range(5):
            want += [p * 4096 + q for q in rows * 64 + cols if flat[p, q]]
        want_ends.append(len(want))
    assert order.dtype == np.int64 and order.tolist() == want and ends == want_ends
    assert len(want) == int(valid.sum()) and len(set(want)) == len(want)


def test_3p_drops_two_taps_of_type_a() -> None:
    assert len(context_taps("5p")) == 24
    assert set(context_taps("5p")) - set(context_taps("3p")) == {(-1, 2), (-1, 3)}


@pytest.mark.parametrize("tau", [0, 2])
def test_planned_group_equals_the_step_by_step_tables(tau: int) -> None:
    """One compiled plan per group (parameters, windows, widths, tables grouped by width, escape
    tables) gives the integers of the step-by-step definitions it replaced."""
    from nlic.entropy.pmf import plan_escapes, plan_group, window_bounds, window_width

    rng = np.random.default_rng(tau)
    n, K = 3000, 3
    logits = rng.integers(-200, 200, (n, K))
    means = rng.integers(-2000, 2000, (n, K))
    log_scales = rng.integers(0, 120, (n, K))
    lo = np.full(n, -128 // (2 * tau + 1)) + rng.integers(-3, 3, n)
    hi = lo + 255 // (2 * tau + 1) + rng.integers(-3, 3, n)
    table = np.concatenate([logits, means, log_scales], 1).astype(np.int32)
    plan = plan_group(table, tau, lo, hi)
    p = BinParams.of(logits, means, log_scales, tau)
    assert all(np.array_equal(a, b) for a, b in zip((plan.params.weights, plan.params.means, plan.params.rows),
                                                    (p.weights, p.means, p.rows)))
    first, last = window_bounds(p, lo, hi)
    widths = window_width(first, last)
    assert np.array_equal(plan.first, first) and np.array_equal(plan.width, widths)
    runs = plan.windows.tables()
    assert [pmf.shape[1] - 1 for _, pmf in runs] == sorted(set(widths.tolist()))
    for idx, pmf in runs:
        width = pmf.shape[1] - 1
        assert np.array_equal(idx, np.flatnonzero(widths == width))
        assert np.array_equal(pmf, window_pmf(p.take(idx), first[idx], width, lo[idx], hi[idx]))
    escaped = np.flatnonzero(rng.random(n) < 0.2)
    for idx, pmf in plan_escapes(plan, escaped, lo, hi).tables():
        span = pmf.shape[1]
        assert np.array_equal(idx, escaped[window_width(lo[escaped], hi[escaped]) == span])
        full = window_pmf(p.take(idx), lo[idx], span, lo[idx], hi[idx])[:, :-1]
        col = np.arange(span)[None, :] + lo[idx, None]
        inside = (col >= first[idx, None]) & (col < (first + widths)[idx, None])
        assert np.array_equal(pmf, np.where(inside, 0.0, full + 1.0))
    # a tile's log-scale offset, applied inside the plan, is the offset applied to the table first
    from nlic.coding.scales import apply

    for offset in (-20, 7):
        moved = table.copy()
        moved[:, 2 * K :] = apply(log_scales, offset)
        shifted, expected = plan_group(table, tau, lo, hi, offset), plan_group(moved, tau, lo, hi)
        assert np.array_equal(shifted.first, expected.first)
        assert np.array_equal(shifted.windows.masses, expected.windows.masses)
        assert not np.array_equal(shifted.windows.masses, plan.windows.masses)
    # and one per symbol (a patch's, format 4) is each symbol's offset applied to its row first
    per_symbol = rng.choice([-20, 0, 7], n)
    moved = table.copy()
    moved[:, 2 * K :] = np.stack([apply(row, int(o)) for row, o in zip(log_scales, per_symbol)])
    shifted, expected = plan_group(table, tau, lo, hi, per_symbol), plan_group(moved, tau, lo, hi)
    assert np.array_equal(shifted.first, expected.first) and np.array_equal(shifted.width, expected.width)
    assert np.array_equal(shifted.windows.masses, expected.windows.masses)
    # a mean shift per symbol (format 6's mean offsets) is each symbol's means moved first
    mean_shift = rng.choice([-40, 0, 3, 25], n) * (2 * tau + 1)
    moved = table.copy()
    moved[:, K : 2 * K] += mean_shift[:, None].astype(moved.dtype)
    shifted = plan_group(table, tau, lo, hi, per_symbol, 8, mean_shift)
    expected = plan_group(moved, tau, lo, hi, per_symbol)
    assert np.array_equal(shifted.params.means, expected.params.means) and np.array_equal(shifted.first, expected.first)
    assert np.array_equal(shifted.windows.masses, expected.windows.masses)
    assert not np.array_equal(shifted.params.means, plan_group(table, tau, lo, hi, per_symbol).params.means)
    # segments (the decoder's tiles of a wavefront, each its own stream and sharpness) are planned as
    # if each were planned alone: the same runs, tables and escape tables, in segment order
    bounds = np.array([0, 700, 700, 1900, n])  # (an empty segment too)
    sharp = np.repeat([8, 12, 8, 16], np.diff(bounds))
    joined = plan_group(table, tau, lo, hi, per_symbol, sharp, mean_shift, bounds)
    escaped = np.flatnonzero(rng.random(n) < 0.2)
    want_windows, want_escapes = [], []
    for seg, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b == a:
            continue
        alone = plan_group(table[a:b], tau, lo[a:b], hi[a:b], per_symbol[a:b], int(sharp[a]), mean_shift[a:b])
        assert np.array_equal(joined.first[a:b], alone.first) and np.array_equal(joined.width[a:b], alone.width)
        want_windows += [(seg, idx + a, pmf) for idx, pmf in alone.windows.tables()]
        mine = escaped[(escaped >= a) & (escaped < b)]
        want_escapes += [(seg, idx + a, pmf) for idx, pmf in plan_escapes(alone, mine - a, lo[a:b], hi[a:b]).tables()]
    for got, want in ((joined.windows.segment_tables(), want_windows),
                      (plan_escapes(joined, escaped, lo, hi).segment_tables(), want_escapes)):
        assert len(got) == len(want) >= 3  # (runs of every non-empty segment)
        for (s1, i1, p1), (s2, i2, p2) in zip(got, want):
            assert s1 == s2 and np.array_equal(i1, i2) and np.array_equal(p1, p2)
    # rows read by index (the encoder's symbols in decoding order from a table in patch order) plan
    # as the reordered copy of the table does
    take = rng.permutation(n)[: n // 2]
    by_index = plan_group(table, tau, lo[take], hi[take], per_symbol[take], 12, mean_shift[take], rows=take)
    copied = plan_group(table[take], tau, lo[take], hi[take], per_symbol[take], 12, mean_shift[take])
    for field in ("weights", "means", "rows"):
        assert np.array_equal(getattr(by_index.params, field), getattr(copied.params, field))
    assert np.array_equal(by_index.first, copied.first) and np.array_equal(by_index.windows.order, copied.windows.order)
    assert np.array_equal(by_index.windows.masses, copied.windows.masses)

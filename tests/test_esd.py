"Tests of convsvd.esd: power-law fits against references, the spectra of each matrization, tables and bad input."
import contextlib, io, math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from hypothesis import assume, given, settings, strategies as st, HealthCheck

from convsvd.esd import (MATRIZATIONS, PowerLawFit, alpha_hat, alpha_hat_correlations, alpha_hat_summary,
                         compare_matrizations, esd_table, fit_power_law, gram_eigenvalues)
import convsvd.esd as esd_mod
from convsvd.core import cache
from convsvd.matrization import layer_svd, singular_value_counts, toeplitz_matrix
from convsvd.models import MnistNet, default_model


def pareto(rng, alpha, n):
    "Exact Pareto sample on [1, inf) with density ~ x^-alpha (inverse CDF of U in (0, 1])."
    return (1 - rng.random(n))**(-1/(alpha - 1))


def reference_fit(x, thresh=1e-5):
    "Independent O(n^2) definition: every eigenvalue but the largest as xmin, smallest KS distance (first on ties)."
    x = np.sort(np.asarray(x, float)); x = x[x > thresh]
    best = None
    for i in range(len(x) - 1):
        tail = x[i:]; n = len(tail)
        with np.errstate(divide='ignore'): alpha = 1 + n / np.log(tail / x[i]).sum()
        D = np.max(np.abs(1 - (tail / x[i])**(1 - alpha) - np.arange(n) / n))
        if best is None or D < best[0]: best = (D, alpha, x[i], n)
    return best


# ---------------------------------------------------------------- fit_power_law

@pytest.mark.parametrize('alpha', [1.5, 2.0, 2.5, 3.5, 5.0])
def test_pareto_recovery(alpha):
    # One n = 1e4 sample is a random draw: measured over 200 samples at alpha = 5, the KS-chosen fit lands within 2%
    # 93.5% of the time (the MLE with the true xmin 99%) because the KS choice sometimes keeps only the top ~40%.
    # So: 20 independent samples per exponent, median error < 1.2%, at least 80% within 2%, none beyond 6%.
    rng = np.random.default_rng(int(alpha * 10))
    for mode in ('exhaustive', 'fast'):
        errs = []
        for _ in range(20):
            r = fit_power_law(pareto(rng, alpha, 10_000), mode=mode)
            assert r.ok and r.mode == mode and r.n == 10_000 and 0 < r.n_tail <= r.n
            assert math.isclose(r.sigma, (r.alpha - 1) / math.sqrt(r.n_tail))
            errs.append(abs(r.alpha - alpha) / alpha)
        errs = np.array(errs)
        assert np.median(errs) < 0.012 and (errs < 0.02).mean() >= 0.8 and errs.max() < 0.06, (mode, errs)


def spectra(rng):
    yield 'bulk+tail', np.concatenate([rng.random(900) + 0.2, 0.8 * pareto(rng, 2.5, 300)])
    yield 'lognormal', rng.lognormal(0, 1, 800)
    yield 'ties', np.repeat(np.concatenate([rng.random(300) + 0.2, pareto(rng, 3.0, 100)]), 2)
    yield 'with zeros', np.concatenate([np.zeros(50), np.full(10, 1e-7), rng.random(400) + 0.1, pareto(rng, 2, 40)])
    yield 'marchenko-pastur', np.linalg.svd(rng.standard_normal((300, 600)) / np.sqrt(600), compute_uv=False)**2


@pytest.mark.parametrize('case', range(5))
def test_exhaustive_equals_reference(case):
    label, x = list(spectra(np.random.default_rng(case)))[case]
    D, alpha, xmin, n = reference_fit(x)
    r = fit_power_law(x, mode='exhaustive')
    assert math.isclose(r.alpha, alpha, rel_tol=1e-9), (label, r, alpha)
    assert r.xmin == xmin and r.n_tail == n, label
    assert math.isclose(r.D, D, rel_tol=1e-9, abs_tol=1e-12), label
    assert r.n == int((np.asarray(x) > 1e-5).sum())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(1e-3, 1e3), min_size=20, max_size=120), st.integers(0, 3))
def test_exhaustive_equals_reference_property(values, dup):
    x = np.repeat(np.asarray(values), 1 + dup % 2)            # half the examples with every value twice
    assume(x.max() > x.min() * (1 + 1e-6))                   # constant spectra are refused (tested below)
    D, alpha, xmin, n = reference_fit(x)
    r = fit_power_law(x, mode='exhaustive')
    assert r.xmin == xmin and r.n_tail == n
    assert math.isclose(r.alpha, alpha, rel_tol=1e-9) or (math.isinf(alpha) and math.isinf(r.alpha))
    assert math.isclose(r.D, D, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize('n', [10_000, 50_000])
def test_fast_close_to_exhaustive(n):
    rng = np.random.default_rng(n)
    for x in (np.concatenate([rng.random(n - n // 10) + 0.1, 0.5 * pareto(rng, 2.5, n // 10)]),
              pareto(rng, 2.0, n), rng.lognormal(0, 1, n), np.repeat(rng.exponential(1, n // 2), 2)):
        e, f = fit_power_law(x, mode='exhaustive'), fit_power_law(x, mode='fast')
        assert abs(f.alpha - e.alpha) <= 0.005 * e.alpha, (e, f)
        assert f.D >= e.D - 1e-12                         # the exhaustive D is the minimum


def test_auto_mode_switch():
    rng = np.random.default_rng(1)
    x = pareto(rng, 2.5, 3000)
    assert fit_power_law(x).mode == 'exhaustive'
    assert fit_power_law(x, exhaustive_limit=1000).mode == 'fast'


@pytest.mark.filterwarnings('ignore::RuntimeWarning')   # WWFit divides by zero on tied tails
def test_matches_weightwatcher():
    ww = pytest.importorskip('weightwatcher.WW_powerlaw')
    rng = np.random.default_rng(3)
    cases = [pareto(rng, 2.5, 12), pareto(rng, 3.0, 19), rng.lognormal(0, 1, 20), rng.lognormal(0, 1, 500),
             np.repeat(rng.random(400) * 3, 2), np.concatenate([rng.random(2000), 0.5 * pareto(rng, 2.2, 200)])]
    for x in cases:
        xs = np.sort(x[x > 1e-5])
        with contextlib.redirect_stdout(io.StringIO()): w = ww.WWFit(xs)
        r = fit_power_law(x, mode='exhaustive')
        assert math.isclose(r.alpha, w.alpha, rel_tol=1e-6), (len(x), r, w.alpha)
        assert r.xmin == w.xmin and math.isclose(r.D, w.D, rel_tol=1e-6, abs_tol=1e-12)
        assert math.isclose(r.sigma, w.sigma, rel_tol=1e-6)


def test_small_sample_and_fixed_xmin():
    rng = np.random.default_rng(0)
    r = fit_power_law(pareto(rng, 2.5, 15))
    assert r.mode == 'small_sample' and r.ok and r.n_tail >= 8
    x = pareto(rng, 3.0, 5000)
    r = fit_power_law(x, xmin=2.0)
    tail = np.sort(x[x >= 2.0])
    assert r.mode == 'fixed_xmin' and r.n_tail == len(tail)
    assert math.isclose(r.alpha, 1 + len(tail) / np.log(tail / 2.0).sum())


def test_fit_bad_data_gives_nan_with_reason():
    cases = {'too few': np.array([1.0, 2.0, 3.0]), 'zero': np.zeros(40), 'constant': np.full(30, 2.5),
             'nan': np.r_[np.ones(20), np.nan], 'inf': np.r_[np.arange(1, 30.0), np.inf]}
    words = {'too few': 'too few', 'zero': 'too few', 'constant': 'constant', 'nan': 'NaN', 'inf': 'infinite'}
    for k, x in cases.items():
        r = fit_power_law(x)
        assert isinstance(r, PowerLawFit) and not r.ok and math.isnan(r.alpha), k
        assert words[k] in r.reason, (k, r.reason)
    r = fit_power_law(torch.tensor([1.0, 2.0, 4.0, 8.0] * 10))                   # tensors are accepted
    assert r.ok


def test_fit_bad_arguments_raise():
    with pytest.raises(ValueError, match='1-D'): fit_power_law(np.ones((4, 4)))
    with pytest.raises(ValueError, match="'auto', 'exhaustive' or 'fast'"): fit_power_law(np.ones(30), mode='slow')
    with pytest.raises(ValueError, match='xmin must be positive'): fit_power_law(np.arange(1, 40.0), xmin=0)


# ---------------------------------------------------------------- gram_eigenvalues

def test_w1_eigenvalues_are_layer_svd_squared():
    model = default_model()
    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
        ev = gram_eigenvalues(layer, 'W1')
        S = layer_svd(layer).S.double().numpy()
        np.testing.assert_allclose(ev, S**2, rtol=1e-5, atol=0)             # layer_svd works in float32
        W = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        ref = torch.linalg.svdvals(W).numpy()**2                              # independent: float64 SVD
        np.testing.assert_allclose(ev, ref, rtol=1e-10, atol=1e-13 * ref[0])
        assert np.all(np.diff(ev) <= 0)


def test_grouped_w1_is_block_diagonal_spectrum():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, groups=4).double()
    ev = gram_eigenvalues(conv, 'W1')
    blocks = [conv.weight[3*g:3*g + 3].detach().reshape(3, -1) for g in range(4)]
    ref = np.sort(np.concatenate([torch.linalg.svdvals(b).numpy()**2 for b in blocks]))[::-1]
    np.testing.assert_allclose(ev, ref, rtol=1e-10)


@pytest.mark.parametrize('c,d,m,k,pad', [(3, 5, 6, 3, 1), (4, 2, 5, 3, 0), (2, 3, 7, 5, 2), (1, 4, 6, 1, 0)])
def test_w2_counts_and_values(c, d, m, k, pad):
    torch.manual_seed(c * d)
    conv = nn.Conv2d(c, d, k, padding=pad, padding_mode='circular' if pad else 'zeros').double()
    ev = gram_eigenvalues(conv, 'W2', m)
    assert len(ev) == min(c, d) * m * m
    if k == 2 * pad + 1:   # 'same' circular padding: the explicit W2 is the circulant operator
        T = toeplitz_matrix(conv, m)
        ref = torch.linalg.eigvalsh(T @ T.T).flip(0).numpy()[:len(ev)]
        np.testing.assert_allclose(ev, ref, rtol=1e-5, atol=1e-10)
    # trace identity: every weight appears in m^2 rows (circular)
    frob = (conv.weight.detach()**2).sum().item()
    assert math.isclose(ev.sum(), m * m * frob, rel_tol=1e-5)


def test_w2_counts_mnistnet():
    model = default_model()
    assert len(gram_eigenvalues(model.conv1, 'W2', 28)) == 1 * 28**2
    assert len(gram_eigenvalues(model.conv2, 'W2', (26, 26))) == 32 * 26**2
    np.testing.assert_allclose(gram_eigenvalues(model.fc1, 'W2'), gram_eigenvalues(model.fc1, 'W1'))


def test_slices_are_weightwatchers_pooled_slices():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3)
    ev = gram_eigenvalues(conv, 'slices')
    W = conv.weight.detach().double().numpy()
    ref = np.sort(np.concatenate([np.linalg.svd(W[:, :, i, j], compute_uv=False)**2
                                  for i in range(3) for j in range(3)]))[::-1]
    np.testing.assert_allclose(ev, ref, rtol=1e-10)
    np.testing.assert_allclose(gram_eigenvalues(conv, 'slices', normalize='ww'), ref / 2, rtol=1e-10)
    np.testing.assert_allclose(gram_eigenvalues(conv, 'slices', normalize='fan_in'), ref / 54, rtol=1e-10)
    np.testing.assert_allclose(gram_eigenvalues(conv, 'slices', normalize=3.0), ref * 3, rtol=1e-10)


def test_gram_eigenvalues_bad_input():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match='needs input_size'): gram_eigenvalues(conv, 'W2')
    with pytest.raises(ValueError, match=r'not a multiple of the stride \(2, 2\)'): gram_eigenvalues(nn.Conv2d(3, 4, 3, stride=2), 'W2', 7)
    with pytest.raises(ValueError, match='matrization must be one of'): gram_eigenvalues(conv, 'W9')
    with pytest.raises(ValueError, match='normalize must be'): gram_eigenvalues(conv, normalize=-1)
    with pytest.raises(TypeError, match='Conv1d, Conv2d and Linear'): gram_eigenvalues(nn.ReLU())
    bad = nn.Linear(5, 4)
    with torch.no_grad(): bad.weight[1, 2] = float('inf')
    with pytest.raises(ValueError, match="layer 'fc' .*NaN/Inf"): gram_eigenvalues(bad, name='fc')


# ---------------------------------------------------------------- tables

class Odd(nn.Module):
    "Every degenerate case in one model."
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.zero = nn.Conv2d(16, 16, 3, padding=1)
        self.ortho = nn.Conv2d(16, 16, 1)
        self.nan = nn.Conv2d(16, 16, 3, padding=1)
        self.good = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 5)
        with torch.no_grad():
            self.zero.weight.zero_()
            self.ortho.weight.copy_(torch.eye(16)[:, :, None, None])
            self.nan.weight[0, 0, 0, 0] = float('nan')

    def forward(self, x):
        x = self.good(self.nan(self.ortho(self.zero(self.dw(self.stem(x))))))
        return self.head(x.mean((2, 3)))


def test_esd_table_flags_and_never_crashes():
    model = Odd()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    tab = esd_table(model, input_shape=(3, 16, 16), progress=False)
    assert model.training                                        # mode restored
    for k, v in model.state_dict().items(): assert torch.equal(v.nan_to_num(), before[k].nan_to_num()), k
    f = tab.set_index(['layer', 'matrization'])['flags']
    assert f[('stem', 'W2')] == '' and f[('dw', 'W2')] == 'depthwise'          # a strided W2 through its polyphase components
    assert 'depthwise' in f[('dw', 'W1')] and 'depthwise' in f[('dw', 'slices')]
    assert f[('zero', 'W1')] == 'zero' and f[('ortho', 'W2')] == 'constant'
    assert all(f[('nan', m)] == 'nan_weights' for m in MATRIZATIONS)
    assert f[('head', 'W1')] == 'few_eigs' and f[('good', 'W1')] == ''
    assert (tab.loc[tab['flags'] != '', 'reason'] != '').all()
    s = alpha_hat_summary(tab)
    assert s.loc['W1', 'layers_used'] == 1 and s.loc['W2', 'layers_used'] == 2
    good = tab[(tab.layer == 'good') & (tab.matrization == 'W2')].iloc[0]
    assert good['input'] == '8x8' and good['n_eigs'] == 16 * 64
    used = tab[(tab.matrization == 'W2') & (tab['flags'] == '')]
    assert sorted(used.layer) == ['good', 'stem']
    assert math.isclose(alpha_hat(tab, 'W2'), (used['alpha'] * np.log10(used['lambda_max'])).sum())
    no_size = esd_table(model, 'W2', layers=['good', 'head'], progress=False)
    assert no_size['flags'].tolist() == ['no_input_size', 'few_eigs']


def test_esd_table_bad_arguments():
    model = Odd()
    with pytest.raises(ValueError, match="unknown matrization 'W5'"): esd_table(model, ('W1', 'W5'))
    with pytest.raises(ValueError, match='input_shape'): esd_table(model, 'W2', input_shape=(3, 2))
    with pytest.raises(KeyError, match='not found'): esd_table(model, layers='stemm')
    with pytest.raises(ValueError, match='normalize'): esd_table(model, normalize='glorot')


def test_alpha_hat_is_eq12_sum_base10():
    tab = esd_table(default_model(), input_shape=(1, 28, 28), progress=False)
    for m in MATRIZATIONS:
        t = tab[(tab.matrization == m) & (tab['flags'] == '')]
        ref = float((t.alpha * np.log10(t.lambda_max)).sum())
        assert math.isclose(alpha_hat(tab, m), ref, rel_tol=1e-12)
        assert math.isclose(alpha_hat(tab, m, reduce='mean'), ref / len(t), rel_tol=1e-12)
        t_all = tab[(tab.matrization == m) & np.isfinite(tab.alpha_weighted)]
        assert math.isclose(alpha_hat(tab, m, include_degenerate=True), t_all.alpha_weighted.sum(), rel_tol=1e-12)
    w2 = tab[tab.matrization == 'W2'].set_index('layer')
    assert w2.loc['conv2', 'n_eigs'] == 32 * 26**2 and w2.loc['conv1', 'input'] == '28x28'
    cm = compare_matrizations(tab)
    assert list(cm.index) == ['conv1', 'conv2', 'fc1', 'fc2']
    with pytest.raises(KeyError, match="it has 'W1', 'W2', 'slices'"): alpha_hat(tab, 'W3')
    with pytest.raises(TypeError, match='esd_table'): alpha_hat(pd.DataFrame({'a': [1]}))


def test_alpha_hat_correlations():
    frame = pd.DataFrame(dict(family=['a'] * 4 + ['b'] * 2, matrization='W1', accuracy=[.9, .8, .7, .6, .5, .4],
                              alpha_hat=[1.0, 2.0, 3.0, 5.0, 1.0, 2.0]))
    c = alpha_hat_correlations(frame)
    assert math.isclose(c.loc[('a', 'W1'), 'spearman_rho'], -1.0)
    assert c.loc[('a', 'W1'), 'pearson_r'] < -0.95 and c.loc[('a', 'W1'), 'n'] == 4
    assert math.isnan(c.loc[('b', 'W1'), 'pearson_r'])                   # two points: no correlation
    with pytest.raises(KeyError, match='needs the columns'): alpha_hat_correlations(frame.drop(columns='family'))


# ---------------------------------------------------------------- large layers, the cache, strided W2

def test_strided_w2_is_the_explicit_operators_spectrum():
    torch.manual_seed(0)
    for conv, m in ((nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode='circular', bias=False), 12),
                    (nn.Conv2d(4, 6, 1, stride=2, bias=False), 10), (nn.Conv2d(2, 5, 4, stride=2, padding=1, padding_mode='circular'), 8)):
        conv = conv.double()
        ev = gram_eigenvalues(conv, 'W2', m)
        T = toeplitz_matrix(conv, m)
        ref = torch.linalg.eigvalsh(T @ T.T).flip(0).numpy()[:len(ev)]
        np.testing.assert_allclose(ev, ref, rtol=1e-7, atol=1e-12*ref[0])
        model = nn.Sequential(conv)
        tab = esd_table(model, 'W2', input_shape=(conv.in_channels, m, m), progress=False)
        assert tab.n_eigs[0] == singular_value_counts(model, (conv.in_channels, m, m)).W2[0] == len(ev)


def test_strided_counts_explain_the_difference():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 4, 1, stride=2))
    tab = esd_table(model, 'W2', input_shape=(1, 9, 9), progress=False).set_index('layer')
    assert tab.loc['0', 'flags'] == '' and 'own operator 9x9 -> 7x7' in tab.loc['0', 'reason']
    assert tab.loc['1', 'flags'] == 'strided' and 'not a multiple of the stride' in tab.loc['1', 'reason']


def test_no_layer_is_skipped():
    "WeightWatcher skips layers above 15,000 eigenvalues or 50,000 rows; the ESD table keeps every one."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(20, 32, 3, padding=1), nn.Flatten(), nn.Linear(32*30*30, 40))  # 28,800 features
    tab = esd_table(model, ('W1', 'W2'), input_shape=(20, 30, 30), progress=False).set_index(['layer', 'matrization'])
    assert tab.loc[('0', 'W2'), 'n_eigs'] == 20*30*30 > 15_000 and tab.loc[('2', 'W1'), 'n_eigs'] == 40
    assert np.isfinite(tab.alpha).all()


def test_spectra_are_cached_per_weight_and_shared(monkeypatch):
    torch.manual_seed(0)
    calls = []
    real = esd_mod._gram_values
    monkeypatch.setattr(esd_mod, '_gram_values', lambda M: calls.append(M.shape) or real(M))
    fc = nn.Linear(700, 300)
    ev = gram_eigenvalues(fc)
    for m in MATRIZATIONS: np.testing.assert_array_equal(gram_eigenvalues(fc, m), ev)   # a Linear layer: one computation
    assert len(calls) == 1
    ev[:] = 0                                                          # the caller's copy
    assert gram_eigenvalues(fc)[0] > 0
    with torch.no_grad(): fc.weight.mul_(2)
    np.testing.assert_allclose(gram_eigenvalues(fc), 4*gram_eigenvalues(fc, normalize=0.25), rtol=1e-12)
    assert len(calls) == 2
    conv = nn.Conv2d(64, 128, 3)
    S = layer_svd(conv).S.double().numpy()                            # the Gram route leaves its eigenvalues behind
    assert len(calls) == 2
    np.testing.assert_allclose(gram_eigenvalues(conv), S**2, rtol=1e-6)
    assert len(calls) == 2


def test_esd_leaves_spectral_norm_buffers_alone():
    model = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 16, 3, padding=1)), nn.Flatten(),
                          nn.utils.parametrizations.spectral_norm(nn.Linear(16*8*8, 10))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    esd_table(model, input_shape=(3, 8, 8), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training

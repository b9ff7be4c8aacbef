"""Cheap tests of the explorers without a browser: set control values programmatically and check what they compute
against the modules' own functions (and direct formulas)."""
import copy

import ipywidgets as W
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

from convsvd import explorers as E
from convsvd import featurevis as fv, hypergraphs as hg, influential as inf, signals as S
from convsvd.esd import esd_table
from convsvd.matrization import layer_svd
from convsvd.models import default_model, digits_dataset

@pytest.fixture(scope='module')
def model(): return default_model()

@pytest.fixture(scope='module')
def data():
    "120 held-out digits, every class present (a quick dataset for the explorers)."
    test = digits_dataset(train=False)
    idx = np.linspace(0, len(test) - 1, 120).round().astype(int)
    return torch.utils.data.TensorDataset(torch.stack([test[i][0] for i in idx]), torch.tensor([test[i][1] for i in idx]))

@pytest.fixture(scope='module')
def train():
    tr = digits_dataset(train=True)
    idx = np.linspace(0, len(tr) - 1, 300).round().astype(int)
    return torch.utils.data.TensorDataset(torch.stack([tr[i][0] for i in idx]), torch.tensor([tr[i][1] for i in idx]))

def leaves(w):
    "Every widget under `w` that is not a container."
    if isinstance(w, W.Box): return [x for c in w.children for x in leaves(c)]
    return [w]

def check_classes(ex):
    "Every control and output of an explorer carries a convsvd-* CSS class."
    assert 'convsvd-explorer' in ex.widget._dom_classes and f'convsvd-{ex.kind}-explorer' in ex.widget._dom_classes
    for w in leaves(ex.widget):
        assert any(c.startswith('convsvd-') for c in w._dom_classes), (type(w).__name__, getattr(w, 'description', ''))

def png_of(fig): return E.figure_png(fig)

# --- Analysis -------------------------------------------------------------------------------------------------

def test_analysis_computes_once_and_follows_weights(model, data, monkeypatch):
    calls = []
    real = E.collect_signals
    monkeypatch.setattr(E, 'collect_signals', lambda *a, **k: calls.append(1) or real(*a, **k))
    m = copy.deepcopy(model)
    an = E.Analysis.of(m, data)
    ss = an.signals(progress=False)
    assert E.Analysis.of(m, data).signals() is ss and len(calls) == 1
    # the signals are U^T (Y - b) averaged over positions (section 4.3)
    x = data[5][0]
    with torch.no_grad():
        Y = m.conv1(x[None])[0] - m.conv1.bias[:, None, None]
    np.testing.assert_allclose(ss['conv1'][5], (layer_svd(m.conv1).U.T @ Y.flatten(1)).mean(1).numpy(), rtol=1e-4, atol=1e-5)
    with torch.no_grad(): m.conv1.weight.mul_(2)          # new weights: a new analysis, new signals
    an2 = E.Analysis.of(m, data)
    assert an2 is not an and an2.signals(progress=False) is not ss and len(calls) == 2

def test_analysis_bad_input(model):
    with pytest.raises(ValueError, match='no linear layer'): E.Analysis(nn.Sequential(nn.ReLU()))
    rgb = torch.utils.data.TensorDataset(torch.rand(3, 3, 32, 32), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r'cannot run on the data.s images of shape \(3, 32, 32\)'):
        E.Analysis(model, rgb).check_data()
    with pytest.raises(KeyError, match='close matches: conv2, conv1'): E.Analysis(model, layers=['conv9'])
    an = E.Analysis(model)                                   # no data: no W2, and a clear message
    assert an.matrizations() == ('W1', 'slices')
    with pytest.raises(ValueError, match='W2 needs the input shape'): an.eigenvalues('conv2', 'W2')

# --- LayerExplorer --------------------------------------------------------------------------------------------

def test_layer_explorer(model, data):
    lx = E.LayerExplorer(model, data, layer='conv2', image=4, vectors=3, progress=False)
    assert lx.ok and lx.error.value == ''
    check_classes(lx)
    an = lx.an
    x = data[4][0]
    # the outputs are the modules' figures for the current controls
    assert lx.out['figure5'].value == png_of(S.plot_layer_steps(model, x, 'conv2', max_maps=32))
    assert lx.out['signal-maps'].value == png_of(S.plot_signal_maps(model, x, 'conv2', [0, 1, 2]))
    ref = S.exemplary_images(an.signals(), 'conv2', [0, 1, 2], k=8)
    assert lx.tables['exemplars']['index'].tolist() == ref['index'].tolist()
    # an image change redraws the maps and figure 5, not the exemplary images
    d = dict(lx.draws)
    lx.image.value = 9
    assert lx.draws['exemplars'] == d['exemplars'] and lx.draws['figure5'] == d['figure5'] + 1
    assert lx.out['signal-maps'].value == png_of(S.plot_signal_maps(model, data[9][0], 'conv2', [0, 1, 2]))
    # vectors: maps and exemplary images, not figure 5
    lx.vectors.value = (1, 4)
    assert lx.draws['figure5'] == d['figure5'] + 1 and lx.draws['exemplars'] == d['exemplars'] + 1
    assert lx.tables['exemplars']['index'].tolist() == S.exemplary_images(an.signals(), 'conv2', [1, 4], k=8)['index'].tolist()
    assert 'vectors=1,4' in lx.status.value and 'image=9' in lx.status.value
    # a layer change: vectors follow the layer's rank; a Linear layer has no figure 5 and says why
    lx.layer.value = 'conv1'
    assert [v for _, v in lx.vectors.options] == list(range(9)) and lx.picked == [0, 1]
    assert 'layer=conv1' in lx.status.value
    lx.layer.value = 'fc1'
    assert len(lx.vectors.options) == 128 and lx.out['figure5'].layout.display == 'none'
    assert 'fully connected' in lx.notes['figure5'].value and lx.error.value == ''
    assert not plt.get_fignums()

def test_layer_explorer_bad_input(model, data):
    bad = E.LayerExplorer(nn.Sequential(nn.Flatten(), nn.ReLU()), data)
    assert not bad.ok and 'no linear layer' in bad.error.value and 'not available' in bad.status.value
    rgb = torch.utils.data.TensorDataset(torch.rand(3, 3, 32, 32), torch.zeros(3, dtype=torch.long))
    bad = E.LayerExplorer(model, rgb, progress=False)
    assert not bad.ok and '1x28x28' in bad.error.value
    bad = E.LayerExplorer(model, data, layer='conv9', progress=False)
    assert not bad.ok and 'close matches: conv2, conv1' in bad.error.value
    # a failing redraw is reported in the widget, not raised
    own = torch.utils.data.TensorDataset(data.tensors[0][:60], data.tensors[1][:60])
    lx = E.LayerExplorer(model, own, layer='conv1', progress=False)
    lx.an.data = torch.utils.data.TensorDataset(torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    lx.image.value = 50                                   # beyond the (replaced, 2-image) data
    assert 'image index 50 outside 0..1' in lx.error.value

# --- ESDExplorer ----------------------------------------------------------------------------------------------

def test_esd_explorer(model, data):
    ex = E.ESDExplorer(model, data, layer='conv2', progress=False)
    assert ex.ok and ex.error.value == ''
    check_classes(ex)
    t = ex.an.esd()
    np.testing.assert_allclose(np.sort(ex.an.eigenvalues('conv2', 'W1')), np.sort(layer_svd(model.conv2).S.double().numpy() ** 2),
                               rtol=1e-4)
    ref = esd_table(model, ('W2',), input_shape=(1, 28, 28), layers='conv2', progress=False)
    assert ex.an.fit('conv2', 'W2').alpha == pytest.approx(ref.alpha.item(), rel=1e-9)
    assert t[(t.layer == 'conv2') & (t.matrization == 'W2')].alpha.item() == pytest.approx(ref.alpha.item(), rel=1e-9)
    d = dict(ex.draws)
    ex.layer.value = 'fc1'                                # the layer: ESDs and the layer's table only
    assert ex.draws['alphas-plot'] == d['alphas-plot'] and ex.draws['esd-plot'] == d['esd-plot'] + 1
    ex.matrizations.value = ('slices',)                   # matrizations: everything
    assert ex.draws['alphas-plot'] == d['alphas-plot'] + 1 and 'matrizations=slices' in ex.status.value
    assert 'slices' in ex.alpha_hat.value and '>W1<' not in ex.alpha_hat.value
    ex.matrizations.value = ()
    assert ex.out['esd-plot'].layout.display == 'none' and ex.error.value == ''
    # no data and no input shape: W2 is not offered
    ex2 = E.ESDExplorer(model, progress=False)
    assert ex2.ok and tuple(ex2.matrizations.options) == ('W1', 'slices')

# --- HypergraphExplorer ---------------------------------------------------------------------------------------

def test_hypergraph_explorer(model, data):
    hx = E.HypergraphExplorer(model, data, layer='conv2', q=0.85, p=75, progress=False)
    assert hx.ok and hx.error.value == ''
    check_classes(hx)
    ss = hx.an.signals()
    for q, p in [(0.85, 75), (0.6, 50), (0.93, 90)]:
        hx.q.value, hx.p.value = q, p
        ref = hg.incidence_table(hg.layer_hypergraph(ss, 'conv2', q, p, empty_classes='drop'))
        got = hg.incidence_table(hx.H)
        assert got.loc[ref.index, ref.columns].to_numpy().tolist() == ref.to_numpy().tolist()
        assert list(hx.classes.index) == list(hg.equivalence_classes(ref).index)
        assert f'q={q:.2f}' in hx.status.value and f'p={p:.0f}' in hx.status.value
    hx.q.value, hx.p.value = 0.6, 50
    assert len(hx.classes) >= 2
    # picking a class redraws only its maps, with its vectors over its exemplary images
    d = dict(hx.draws)
    label = hx.classes.index[1]
    hx.eqclass.value = label
    assert hx.draws['hierarchy-plot'] == d['hierarchy-plot'] and hx.draws['class-maps'] == d['class-maps'] + 1
    vec = [int(v[1:]) for v in hx.classes.loc[label, 'vectors']]
    assert hx.tables['class-exemplars']['index'].tolist() == S.exemplary_images(ss, 'conv2', vec, k=3)['index'].tolist()
    # nothing significant: a note, no error; a Linear layer: no maps, a note
    hx.layer.value = 'conv1'
    fam = hx.family('conv1').summary
    q, p = fam[fam.nodes == 0].iloc[0][['q', 'p']]             # a (q, p) where no vector of conv1 is significant
    hx.q.value, hx.p.value = q, p
    assert len(hx.classes) == 0 and 'no singular vector' in hx.notes['hypergraph'].value and hx.error.value == ''
    assert hx.out['hierarchy-plot'].layout.display == 'none'
    hx.layer.value = 'fc1'; hx.q.value, hx.p.value = 0.7, 50
    assert hx.error.value == '' and ('fully connected' in hx.notes['class-maps'].value or not len(hx.classes))
    assert not plt.get_fignums()

# --- FeatureVisExplorer ---------------------------------------------------------------------------------------

def test_featurevis_explorer(model, data):
    fx = E.FeatureVisExplorer(model, data, layer='conv2', vectors=2, steps=16, render=False, progress=False)
    assert fx.ok and 'press Render' in fx.status.value and fx.out['featurevis-plot'].layout.display == 'none'
    check_classes(fx)
    ref = [S.exemplary_images(fx.an.signals(), 'conv2', i, k=5)['index'].tolist() for i in (0, 1)]
    assert fx.tables['exemplars']['index'].tolist() == ref[0] + ref[1]
    fx.render()
    vis = fx.renders[fx.key()]
    assert vis.images.shape == (2, 1, 28, 28) and 'image=rendered' in fx.status.value
    obj = fv.singular_vector('conv2', [0, 1])
    start = fv.visualize(model, obj, image_size=28, channels=1, steps=0, progress=False)
    assert (fv.objective_values(model, obj, vis) > fv.objective_values(model, obj, start)).all()
    # weighted sum: exemplary images follow at once, the rendering waits for Render
    fx.mode.value = 'weighted sum'; fx.weights.value = '1, -1'
    w = S.exemplary_images(fx.an.signals(), 'conv2', [0, 1], weights=[1, -1], k=5)
    assert fx.tables['exemplars']['index'].tolist() == w['index'].tolist() and 'press Render' in fx.status.value
    fx.weights.value = '1, 2, 3'
    assert '3 weights for 2 picked vectors' in fx.error.value
    fx.weights.value = '1 -1'
    assert fx.error.value == ''
    n = len(fx.renders); fx.render(); assert len(fx.renders) == n + 1
    assert fx.renders[fx.key()].images.shape == (1, 1, 28, 28)
    fx.mode.value = 'each vector'                          # the first rendering comes back from the cache
    assert len(fx.renders) == n + 1 and fx.out['featurevis-plot'].layout.display is None
    assert E.parse_weights('', 3) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match='numbers'): E.parse_weights('a, b', 2)

# --- InfluenceExplorer ----------------------------------------------------------------------------------------

def test_influence_explorer(model, data, train):
    ix = E.InfluenceExplorer(model, data, train=train, k=3, k_prime=5, ks=(1, 3), k_primes=(1, 5), progress=False)
    assert ix.ok and ix.error.value == ''
    check_classes(ix)
    tr = inf.penultimate_features(model, train, progress=False)
    te = inf.penultimate_features(model, data, progress=False)
    for k, kp in [(3, 5), (1, 8), (10, 2)]:
        ix.k.value, ix.k_prime.value = k, kp
        ref = inf.influential_features(tr.features, tr.labels, k, kp)
        assert {c: list(v) for c, v in ix.influential().items()} == {c: list(v) for c, v in ref.items()}
        acc = inf.decomposition_accuracy(model.fc2, ref, te.features, te.labels)
        assert ix.result['relative'] == pytest.approx(acc['relative'])
        assert f"k={k}" in ix.status.value and f"k'={kp}" in ix.status.value
    d = dict(ix.draws)
    ix.cls.value = 4                                       # the class: table and heatmaps only
    assert ix.draws['accuracy'] == d['accuracy'] and ix.draws['heatmaps'] == d['heatmaps'] + 1
    assert 'globally pooled' in ix.heatmaps_note.value     # MnistNet's fc2 reads fc1, not pooled channel maps
    # a GAP CNN has heatmaps
    torch.manual_seed(0)
    gap = inf.GapCNN(depth=2).eval()
    gx = E.InfluenceExplorer(gap, data, train=train, k=2, k_prime=3, ks=(1, 2), k_primes=(1, 3), progress=False)
    assert gx.ok and gx.error.value == '' and gx.out['heatmaps'].layout.display is None and gx.out['heatmaps'].value

def test_influence_explorer_bad_input(data):
    convs_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    ix = E.InfluenceExplorer(convs_only, data, progress=False)
    assert not ix.ok and 'no nn.Linear layer' in ix.error.value

def test_every_explorer_reports_bad_models_in_the_widget(data):
    none = nn.Sequential(nn.Flatten(), nn.ReLU())
    for cls in [E.LayerExplorer, E.HypergraphExplorer, E.FeatureVisExplorer, E.InfluenceExplorer]:
        ex = cls(none, data, progress=False)
        assert not ex.ok and 'no linear layer' in ex.error.value, cls.__name__
    ex = E.ESDExplorer(none, progress=False)
    assert not ex.ok and 'no linear layer' in ex.error.value

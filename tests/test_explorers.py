"""Cheap tests of the explorers without a browser: set control values programmatically and check what they compute
against the modules' own functions (and direct formulas)."""
import asyncio, json, re
from pathlib import Path

import ipywidgets as W
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

from convsvd import analysis as A, explorers as E
from convsvd import featurevis as fv, hypergraphs as hg, influential as inf, signals as S
from convsvd.core import image_array
from convsvd.esd import esd_table
from convsvd.matrization import layer_svd
from convsvd.models import default_model, digits_dataset
from signal_contract import CONTRACT, Recording

NB = Path(__file__).resolve().parents[1] / 'nbs' / '11_explorers.ipynb'

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

def quiet(ex):
    "No warning or traceback was printed into the widget; none leaked as a figure."
    assert ex.progress.outputs == () and not plt.get_fignums()

def mosaic_png(model, data, layer, idx, vectors, labels=None):
    "The signal-map mosaic the explorers draw, computed here from the modules directly."
    x = torch.stack([data[i][0] for i in idx])
    with torch.no_grad(): maps = S.signal_map(model, x, layer)[:, vectors].float()
    return A.figure_png(E.plot_map_mosaic([image_array(xi) for xi in x], maps, vectors, layer_svd(getattr(model, layer)).S,
                                          labels if labels is not None else [f'#{i}' for i in idx]))

# --- LayerExplorer --------------------------------------------------------------------------------------------

def test_layer_explorer(model, data):
    lx = E.LayerExplorer(model, data, layer='conv2', image=4, vectors=3, k=3, max_maps=2, progress=False)
    assert lx.ok and lx.error.value == ''
    check_classes(lx)
    an = lx.an
    assert lx.out['figure5'].value == A.figure_png(S.plot_layer_steps(model, data[4][0], 'conv2', max_maps=2))
    assert lx.out['signal-maps'].value == mosaic_png(model, data, 'conv2', [4], [0, 1, 2])
    ref = S.exemplary_images(an.signals(), 'conv2', [0, 1, 2], k=3)
    assert lx.tables['exemplars']['index'].tolist() == ref['index'].tolist()
    d = dict(lx.draws)
    lx.image.value = 9                                    # the image: maps, signals, figure 5; not the exemplary images
    assert lx.draws['exemplars'] == d['exemplars'] and lx.draws['figure5'] == d['figure5'] + 1
    assert lx.out['signal-maps'].value == mosaic_png(model, data, 'conv2', [9], [0, 1, 2])
    lx.vectors.value = (1, 4)                             # vectors: maps and exemplary images, not figure 5
    assert lx.draws['figure5'] == d['figure5'] + 1 and lx.draws['exemplars'] == d['exemplars'] + 1
    assert lx.tables['exemplars']['index'].tolist() == S.exemplary_images(an.signals(), 'conv2', [1, 4], k=3)['index'].tolist()
    assert 'vectors=1,4' in lx.status.value and 'image=9' in lx.status.value
    lx.layer.value = 'conv1'                              # the picked vectors are kept where the layer has them
    assert [v for _, v in lx.vectors.options] == list(range(9)) and lx.picked == [1, 4] and 'layer=conv1' in lx.status.value
    lx.vectors.value = (3, 8); lx.layer.value = 'conv2'
    assert lx.picked == [3, 8]
    lx.vectors.value = (40, 50); lx.layer.value = 'conv1'  # none of them exists in conv1: its top two
    assert lx.picked == [0, 1]
    lx.layer.value = 'fc1'
    assert len(lx.vectors.options) == 128 and lx.out['figure5'].layout.display == 'none'
    assert 'fully connected' in lx.notes['figure5'].value and lx.error.value == ''
    quiet(lx)

def test_layer_explorer_bad_input(model, data):
    bad = E.LayerExplorer(nn.Sequential(nn.Flatten(), nn.ReLU()), data)
    assert not bad.ok and 'no linear layer' in bad.error.value and 'not available' in bad.status.value
    rgb = torch.utils.data.TensorDataset(torch.rand(3, 3, 32, 32), torch.zeros(3, dtype=torch.long))
    bad = E.LayerExplorer(model, rgb, progress=False)
    assert not bad.ok and '1x28x28' in bad.error.value
    bad = E.LayerExplorer(model, data, layer='conv9', progress=False)
    assert not bad.ok and 'close matches: conv2, conv1' in bad.error.value
    own = torch.utils.data.TensorDataset(data.tensors[0][:60], data.tensors[1][:60])
    lx = E.LayerExplorer(model, own, layer='conv1', max_maps=2, progress=False)
    lx.an.data = torch.utils.data.TensorDataset(torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    lx.image.value = 50                                   # beyond the (replaced, 2-image) data: reported, not raised
    assert 'image index 50 outside 0..1' in lx.error.value

def test_warnings_are_kept_not_printed(data):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__(); self.body = nn.Conv2d(1, 3, 3); self.head = nn.Linear(3, 10); self.unused = nn.Linear(3, 10)
        def forward(self, x): return self.head(self.body(x).mean((2, 3)))
    lx = E.LayerExplorer(TwoHeads(), data, max_maps=2, progress=True)
    assert lx.ok and any('never called' in w for w in lx.warnings['setup'])
    assert list(lx.layer.options) == ['body', 'head']     # only layers with signals are offered
    quiet(lx)

# --- ESDExplorer ----------------------------------------------------------------------------------------------

def test_esd_explorer(model, data):
    ex = E.ESDExplorer(model, data, layer='conv2', progress=False)
    assert ex.ok and ex.error.value == ''
    check_classes(ex)
    t = ex.an.esd()
    np.testing.assert_allclose(np.sort(ex.an.eigenvalues('conv2', 'W1')), np.sort(layer_svd(model.conv2).S.double().numpy() ** 2), rtol=1e-4)
    ref = esd_table(model, ('W2',), input_shape=(1, 28, 28), layers='conv2', progress=False)
    assert ex.an.fit('conv2', 'W2').alpha == pytest.approx(ref.alpha.item(), rel=1e-9)
    assert t[(t.layer == 'conv2') & (t.matrization == 'W2')].alpha.item() == pytest.approx(ref.alpha.item(), rel=1e-9)
    assert ex.out['esd-plot'].value == A.figure_png(A.plot_layer_esds(ex.an, 'conv2', ('W1', 'W2')))
    d = dict(ex.draws)
    ex.layer.value = 'fc1'                                # the layer: ESDs and the layer's table only
    assert ex.draws['alphas-plot'] == d['alphas-plot'] and ex.draws['esd-plot'] == d['esd-plot'] + 1
    ex.matrizations.value = ('slices',)                   # matrizations: everything
    assert ex.draws['alphas-plot'] == d['alphas-plot'] + 1 and 'matrizations=slices' in ex.status.value
    assert 'slices' in ex.alpha_hat.value and '>W1<' not in ex.alpha_hat.value
    ex.matrizations.value = ()
    assert ex.out['esd-plot'].layout.display == 'none' and ex.error.value == ''
    ex2 = E.ESDExplorer(model, progress=False)            # no data and no input shape: W2 is not offered
    assert ex2.ok and tuple(ex2.matrizations.options) == ('W1', 'slices')
    quiet(ex)

# --- HypergraphExplorer ---------------------------------------------------------------------------------------

def test_hypergraph_explorer(model, data, monkeypatch):
    hx = E.HypergraphExplorer(model, data, layer='conv2', q=0.85, p=75, k=1, progress=False)
    assert hx.ok and hx.error.value == ''
    check_classes(hx)
    ss = hx.an.signals()
    for q, p in [(0.85, 75), (0.6, 50), (0.93, 90)]:
        hx.q.value, hx.p.value = q, p
        H = hg.layer_hypergraph(ss, 'conv2', q, p, empty_classes='drop')
        ref = hg.incidence_table(H)
        assert hx.incidence.loc[ref.index, ref.columns].to_numpy().tolist() == ref.to_numpy().tolist()
        assert not hx.incidence.drop(columns=ref.columns).to_numpy().any()
        assert list(hx.classes.index) == list(hg.equivalence_classes(ref).index)
        assert int(hx.row['depth']) == hg.semantic_hierarchy(H).graph['depth'] and f"depth={hg.semantic_hierarchy(H).graph['depth']}" in hx.status.value
        assert f'q={q:.2f}' in hx.status.value and f'p={p:.0f}' in hx.status.value
    hx.q.value, hx.p.value = 0.6, 50
    assert len(hx.classes) >= 2
    d = dict(hx.draws)                                    # a class redraws only its maps
    label = hx.classes.index[1]
    hx.eqclass.value = label
    assert hx.draws['hierarchy-view'] == d['hierarchy-view'] and hx.draws['class-maps'] == d['class-maps'] + 1
    assert hx.view.selected == label                      # the dropdown's class is highlighted in the view
    vec = [int(v[1:]) for v in hx.classes.loc[label, 'vectors']]
    tab = S.exemplary_images(ss, 'conv2', vec, k=1)
    assert hx.tables['class-exemplars']['index'].tolist() == tab['index'].tolist()
    assert hx.out['class-maps'].value == mosaic_png(model, data, 'conv2', tab['index'].tolist(), vec[:8], list(tab['class']))
    hx.layer.value = 'conv1'                              # nothing significant: a note, no error
    fam = hx.family('conv1').summary
    q, p = fam[fam.nodes == 0].iloc[0][['q', 'p']]
    hx.q.value, hx.p.value = q, p
    assert len(hx.classes) == 0 and 'no singular vector' in hx.notes['hypergraph'].value and hx.error.value == ''
    assert hx.view.layout.display == 'none' and hx.view.selected is None
    hx.layer.value = 'fc1'; hx.q.value, hx.p.value = 0.7, 50
    assert hx.error.value == '' and ('fully connected' in hx.notes['class-maps'].value or not len(hx.classes))
    quiet(hx)

def test_hypergraph_redraw_reads_the_family(model, data, monkeypatch):
    hx = E.HypergraphExplorer(model, data, layer='conv2', k=1, progress=False)
    built, families = [], []
    real_sh, real_fam = hg.semantic_hierarchy, hg.hypergraph_family
    monkeypatch.setattr(hg, 'semantic_hierarchy', lambda h: built.append(1) or real_sh(h))
    monkeypatch.setattr(hg, 'hypergraph_family', lambda *a, **k: families.append(1) or real_fam(*a, **k))
    hx.q.value = 0.72
    assert len(built) <= 1 and families == []             # the hierarchy is built at most once; the family is cached
    n = len(built); hx.q.value = 0.85; hx.q.value = 0.72   # back to a table seen before: its figures come from the cache
    assert len(built) - n <= 1 and families == []

def test_sliders_debounced_in_an_event_loop(model, data):
    hx = E.HypergraphExplorer(model, data, layer='conv2', k=1, progress=False)
    hx.DEBOUNCE = 0.05
    n = hx.draws['hypergraph']
    async def drag():
        for q in (0.84, 0.83, 0.82, 0.81, 0.8): hx.q.value = q     # five steps, faster than the debounce
        assert hx.draws['hypergraph'] == n and hx._pending          # nothing redrawn yet
        for _ in range(600):                                        # wait (no timing is asserted) until all is drawn
            await asyncio.sleep(0.05)
            if not hx._pending: break
    asyncio.run(drag())
    assert hx.draws['hypergraph'] == n + 1 and 'q=0.80' in hx.status.value and not hx._pending
    assert hx.draws['hierarchy-view'] == 2                # the view was updated once for the five steps
    async def flushed():
        hx.q.value = 0.7; hx.flush()
        assert hx.draws['hypergraph'] == n + 2 and not hx._pending
    asyncio.run(flushed())

def test_hypergraph_view_selection_round_trip(model, data):
    "A click in the view (what the browser sends: set_state) picks the class in the dropdown; the dropdown highlights it."
    hx = E.HypergraphExplorer(model, data, layer='conv2', q=0.6, p=50, k=1, progress=False)
    assert len(hx.classes) >= 2 and hx.view.selected == hx.eqclass.value == hx.classes.index[0]
    assert sorted(n['id'] for n in hx.view.nodes) == sorted(hx.classes.index)
    label = hx.classes.index[-1]
    n = hx.draws['class-maps']
    hx.view.set_state({'selected': label})
    assert hx.eqclass.value == label and hx.draws['class-maps'] == n + 1 and label in hx.notes['class-maps'].value
    assert f'picked={label}' in hx.status.value
    vec = [int(v[1:]) for v in hx.classes.loc[label, 'vectors']]
    assert hx.view.selected_vectors == vec
    assert hx.tables['class-exemplars']['index'].tolist() == S.exemplary_images(hx.an.signals(), 'conv2', vec, k=1)['index'].tolist()
    hx.eqclass.value = hx.classes.index[1]
    assert hx.view.selected == hx.classes.index[1] and hx.draws['class-maps'] == n + 2
    hx.view.set_state({'selected': None})                 # a deselection in the browser keeps the dropdown's class
    assert hx.eqclass.value == hx.classes.index[1] and hx.error.value == ''

def test_hypergraph_view_updated_in_place(model, data):
    "A q step updates the one view with only what changed; a kept class stays selected; the view holds the new hierarchy."
    hx = E.HypergraphExplorer(model, data, layer='conv2', q=0.6, p=50, k=1, progress=False)
    view, sent = hx.view, []
    view.comm.send = lambda data=None, buffers=None, **kw: sent.append(data)
    keep = hx.classes.index[0]
    hx.eqclass.value = keep
    sent.clear()
    hx.q.value = 0.61
    assert hx.view is view and all('classes' not in m.get('state', {}) for m in sent if isinstance(m, dict))
    G = hg.semantic_hierarchy(hg.layer_hypergraph(hx.an.signals(), 'conv2', 0.61, 50, empty_classes='drop'))
    ids = [n['id'] for n in view.nodes]
    assert sorted(ids) == sorted(G.nodes) and {(ids[a], ids[b]) for a, b in view.links} == set(G.edges)
    assert hx.eqclass.value == (keep if keep in hx.classes.index else hx.classes.index[0]) == view.selected
    node = view.nodes[0]                                   # hovering asks for a class's images: its node_exemplars
    ex = hg.node_exemplars(hx.an.signals(), 'conv2', node['vectors'], data, [view.classes[c] for c in node['edges']], k=1, model=model)
    got = view.images([node['key']])[node['key']]
    assert [x['caption'] for x in got['images']] == [str(c) for c in ex['classes']] and len(got['maps']) == 1
    hx.layer.value = 'conv1'                               # another layer: new image keys (no stale thumbnails)
    assert not {n['key'] for n in view.nodes} & {node['key']} or view.layout.display == 'none'

def test_close_closes_every_widget(model, data):
    "close() closes the explorer's controls, outputs, the view and their layouts: nothing of a test instance is saved."
    hx = E.HypergraphExplorer(model, data, layer='conv2', k=1, progress=False)
    ws = leaves(hx.widget)
    assert hx.view in ws and all(w.comm is not None for w in ws)
    hx.close()
    assert all(w.comm is None and w.layout.comm is None for w in ws) and hx.widget.comm is None

# --- FeatureVisExplorer ---------------------------------------------------------------------------------------

def test_featurevis_explorer(model, data):
    fx = E.FeatureVisExplorer(model, data, layer='conv2', vectors=2, steps=16, render=False, progress=False)
    assert fx.ok and 'press Render' in fx.status.value and fx.out['featurevis-plot'].layout.display == 'none'
    check_classes(fx)
    assert fx.channels == 1 and fx.weights.disabled           # each vector: no weights to type
    ref = [S.exemplary_images(fx.an.signals(), 'conv2', i, k=5)['index'].tolist() for i in (0, 1)]
    assert fx.tables['exemplars']['index'].tolist() == ref[0] + ref[1] and fx.out['exemplars'].layout.display is None
    fx.render()
    vis = fx.renders[fx.key()]
    assert vis.images.shape == (2, 1, 28, 28) and 'image=rendered' in fx.status.value
    assert fx.out['exemplars'].layout.display == 'none'       # the exemplary images are drawn once: beside the rendering
    obj = fv.singular_vector('conv2', [0, 1])
    start = fv.visualize(model, obj, image_size=28, channels=1, steps=0, progress=False)
    assert (fv.objective_values(model, obj, vis) > fv.objective_values(model, obj, start)).all()
    fx.mode.value = 'weighted sum'; fx.weights.value = '1, -1'
    assert not fx.weights.disabled
    w = S.exemplary_images(fx.an.signals(), 'conv2', [0, 1], weights=[1, -1], k=5)
    assert fx.tables['exemplars']['index'].tolist() == w['index'].tolist() and 'press Render' in fx.status.value
    fx.weights.value = '1, 2, 3'
    assert '3 weights for 2 picked vectors' in fx.error.value
    fx.weights.value = '1 -1'
    assert fx.error.value == ''
    n = len(fx.renders); fx.render(); assert len(fx.renders) == n + 1
    assert fx.renders[fx.key()].images.shape == (1, 1, 28, 28)
    d = dict(fx.draws); fx.steps.value = 24; fx.steps.value = 16    # steps: back to a rendering kept before
    assert fx.draws['featurevis-plot'] == d['featurevis-plot'] + 2 and 'rendered' in fx.status.value
    fx.mode.value = 'each vector'
    assert len(fx.renders) == n + 1 and fx.out['featurevis-plot'].layout.display is None and fx.weights.disabled
    fx.vectors.value = (0, 7); fx.layer.value = 'conv1'
    assert fx.picked == [0, 7]                                 # kept: conv1 has 9 vectors
    assert E.parse_weights('', 3) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match='numbers'): E.parse_weights('a, b', 2)
    quiet(fx)

def test_featurevis_channels_from_the_first_layer():
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    ds = torch.utils.data.TensorDataset(torch.rand(9, 3, 16, 16), torch.arange(9) % 3)
    fx = E.FeatureVisExplorer(rgb, ds, layer='2', vectors=2, steps=8, progress=False)
    assert fx.ok and fx.channels == 3 and fx.renders[fx.key()].images.shape == (2, 3, 16, 16) and fx.error.value == ''
    bad = E.FeatureVisExplorer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)), ds, progress=False)
    assert not bad.ok and 'cannot infer the image channels' in bad.error.value

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
    torch.manual_seed(0)
    gap = inf.GapCNN(depth=2).eval()
    gx = E.InfluenceExplorer(gap, data, train=train, k=2, k_prime=3, ks=(1, 2), k_primes=(1, 3), progress=False)
    assert gx.ok and gx.error.value == '' and gx.out['heatmaps'].layout.display is None and gx.out['heatmaps'].value
    quiet(ix)

def test_influence_explorer_offers_the_classes_of_the_data(model, data, train):
    three = torch.utils.data.Subset(data, [i for i in range(len(data)) if int(data[i][1]) in (2, 5, 7)])
    ix = E.InfluenceExplorer(model, three, train=train, ks=(1, 3), k_primes=(1, 5), progress=False)
    assert [v for _, v in ix.cls.options] == [2, 5, 7] and ix.table.value.count('<tr') == 1 + 3

def test_influence_explorer_bad_input(data):
    convs_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    ix = E.InfluenceExplorer(convs_only, data, progress=False)
    assert not ix.ok and 'no nn.Linear layer' in ix.error.value

def test_every_explorer_reports_bad_models_in_the_widget(data):
    none = nn.Sequential(nn.Flatten(), nn.ReLU())
    for cls in [E.LayerExplorer, E.HypergraphExplorer, E.FeatureVisExplorer, E.InfluenceExplorer, E.ProfileExplorer]:
        ex = cls(none, data, progress=False)
        assert not ex.ok and 'no linear layer' in ex.error.value, cls.__name__
    ex = E.ESDExplorer(none, progress=False)
    assert not ex.ok and 'no linear layer' in ex.error.value

# --- ProfileExplorer ------------------------------------------------------------------------------------------

def same_graph(G, H):
    return (dict(G.nodes(data=True)) == dict(H.nodes(data=True))
            and {(u, v): d for u, v, d in G.edges(data=True)} == {(u, v): d for u, v, d in H.edges(data=True)})

def test_profile_explorer(model, data):
    "The controls give the graph attribution_graph gives for that image and threshold, and svd_profile's row."
    from convsvd import profiles as pf
    px = E.ProfileExplorer(model, data, image=5, threshold=0.2, progress=False)
    assert px.ok and px.error.value == ''
    check_classes(px)
    ss = S.collect_signals(model, data, progress=False)
    for i, t in [(5, 0.2), (5, 0.45), (17, 0.45), (17, 1.0)]:
        px.image.value, px.threshold.value = i, t
        assert same_graph(px.graph(), pf.attribution_graph(model, data[i][0], threshold=t))
        ref = pf.svd_profile(ss, t).subset([i]).to_frame()
        f = px.profile_frame()
        assert list(zip(f.layer, f.vector)) == list(zip(ref.layer, ref.vector)) and np.allclose(f.weight, ref.weight)
        assert np.allclose(f.groupby('layer').weight.sum(), 1)
        assert f'image={i}' in px.status.value and f'threshold={t:.2f}' in px.status.value
    d = dict(px.draws)
    px.image.value = 3                                      # the image: graph and profile, not the class profiles
    assert px.draws['class-profiles'] == d['class-profiles'] and px.draws['attribution-graph'] == d['attribution-graph'] + 1
    assert px.out['attribution-graph'].value == A.figure_png(pf.plot_attribution_graph(
        pf.attribution_graph(model, data[3][0], threshold=1.0), data, ss, max_nodes=6))
    px.threshold.value = 0.3
    assert px.draws['class-profiles'] == d['class-profiles'] + 1
    assert px.out['class-profiles'].value == A.figure_png(pf.plot_class_profiles(pf.svd_profile(ss, 0.3)))
    quiet(px)

def test_profile_explorer_class_graph(model, data):
    "graph of: class gives attributions(...).graph(cls=) over the images of the image's class; the image alone gives it back."
    from convsvd import profiles as pf
    px = E.ProfileExplorer(model, data, image=7, threshold=0.3, graph_of='class', progress=False)
    assert px.ok and px.error.value == ''
    labels = np.array([int(data[i][1]) for i in range(len(data))])
    c = labels[7]
    pos = np.flatnonzero(labels == c)
    A = pf.attributions(model, torch.stack([data[int(i)][0] for i in pos]), threshold=0.3, labels=labels[pos])
    assert same_graph(px.graph(), A.graph(cls=int(c))) and px.graph().graph['images'] == len(pos)
    assert f'images of class {c}' in px.notes['attribution-graph'].value and 'graph=class' in px.status.value
    px.graph_of.value = 'image'
    assert same_graph(px.graph(), pf.attribution_graph(model, data[7][0], threshold=0.3))
    bad = E.ProfileExplorer(model, data, graph_of='both', progress=False)
    assert not bad.ok and 'graph_of must be' in bad.error.value

def test_profile_explorer_bad_input(model, data):
    bad = E.ProfileExplorer(model, data, threshold=1.5, progress=False)
    assert not bad.ok and 'threshold=1.5' in bad.error.value
    bad = E.ProfileExplorer(model, data, edge_threshold=0, progress=False)
    assert not bad.ok and 'edge_threshold' in bad.error.value
    one = E.ProfileExplorer(model, data, layers=['fc2'], progress=False)
    assert not one.ok and 'at least two linear layers' in one.error.value
    an = A.Analysis(model, data)                            # an Analysis works the same
    assert E.ProfileExplorer(an, image=2, progress=False).ok

# --- one path: a SignalSet in, nothing recomputed -------------------------------------------------------------

def test_explorers_use_a_given_signalset_as_it_is(model, data, monkeypatch):
    ss = Recording(S.collect_signals(model, data, progress=False))
    monkeypatch.setattr(A, 'collect_signals', lambda *a, **k: pytest.fail('the explorers recomputed the signals'))
    lx = E.LayerExplorer(model, data, layer='conv2', signals=ss, max_maps=2, progress=False)
    lx.image.value = 3; lx.vectors.value = (1, 2); lx.layer.value = 'fc1'
    hx = E.HypergraphExplorer(model, data, layer='conv2', signals=ss, k=1, progress=False)
    hx.q.value = 0.7
    fx = E.FeatureVisExplorer(model, data, layer='conv2', steps=8, signals=ss, render=False, progress=False)
    an = A.Analysis(model, data, signals=ss)
    ex = E.LayerExplorer(an, max_maps=2, progress=False)   # an Analysis holding it works the same
    for x in (lx, hx, fx, ex): assert x.ok and x.error.value == '', x.error.value
    assert lx.an.signals() is ss and hx.an.signals() is ss
    assert ss.used <= CONTRACT, ss.used - CONTRACT

def test_explorers_share_one_analysis(model, data, monkeypatch):
    calls, real = [], A.collect_signals
    monkeypatch.setattr(A, 'collect_signals', lambda *a, **k: calls.append(1) or real(*a, **k))
    m = default_model()
    E.LayerExplorer(m, data, max_maps=2, progress=False); E.HypergraphExplorer(m, data, k=1, progress=False)
    E.FeatureVisExplorer(m, data, render=False, progress=False)
    assert len(calls) == 1                                 # one signal pass for three explorers of (model, data)
    with torch.no_grad(): m.fc1.weight.data[0, 0] += 1.0   # new weights: computed again
    E.ESDExplorer(m, data, progress=False); E.LayerExplorer(m, data, layer='fc2', progress=False)
    assert len(calls) == 2

# --- the notebook ---------------------------------------------------------------------------------------------

def test_notebook_tests_leave_shown_explorers_alone():
    "Every explorer the notebook shows stays as shown: later cells change a second instance, never it."
    nb = json.loads(NB.read_text())
    assert nb['metadata']['kernelspec']['name'] == 'python3'
    cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    shown = [(i, c.strip().splitlines()[-1].strip()) for i, c in enumerate(cells)
             if re.fullmatch(r'[a-z]\w*', c.strip().splitlines()[-1].strip() if c.strip() else '')]
    shown = [(i, v) for i, v in shown if re.search(rf'^{v} = \w+Explorer\(', cells[i], re.M)]
    assert {v for _, v in shown} >= {'lx', 'ex', 'hx', 'fx', 'ix', 'px'}
    for i, v in shown:
        later = '\n'.join(cells[i + 1:])
        assert not re.search(rf'\b{v}\.(\w+\.value\s*=|render\(|flush\(|\w+\.options\s*=|view\.(selected\s*=|set_state))', later), v

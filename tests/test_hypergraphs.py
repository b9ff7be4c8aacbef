"Tests of convsvd.hypergraphs against direct definitions (loops, set comparisons, networkx)."
import warnings
from fractions import Fraction

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
import hypernetx as hnx
from hypothesis import assume, given, settings, HealthCheck, strategies as st

from convsvd.signals import SignalSet
from convsvd.hypergraphs import (significance, significance_fractions, significance_threshold, layer_hypergraph,
                                 image_significance, image_hypergraph, to_hypergraph, incidence_table,
                                 equivalence_classes, containment_order, semantic_hierarchy, hypergraph_family,
                                 hierarchy_layout, node_exemplars, hierarchy_exemplars,
                                 plot_hypergraph, plot_semantic_hierarchy, plot_hypergraph_hierarchy)

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def signal_sets(draw):
    "Random SignalSets: 1-5 classes of 1-7 images (sizes differ), 1-7 vectors, values with many ties."
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=5))
    r = draw(st.integers(1, 7))
    n = sum(sizes)
    vals = draw(st.lists(st.integers(-3, 3), min_size=n * r, max_size=n * r))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    perm = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(n)   # images in any order
    a = np.array(vals, dtype=np.float32).reshape(n, r) / 2
    return SignalSet({'L': a}, labels[perm], classes=[f'k{j}' for j in range(len(sizes))])

percent = st.one_of(st.sampled_from([50., 75., 100., 100 / 3, 12.5, 66.7, 1e-9]), st.floats(1e-6, 100.))


class ClassAtATime(SignalSet):
    "A SignalSet read as a store is: a class or a block at a time, never a whole layer; records the most rows handed out."
    most = 0
    def __getitem__(self, layer): raise AssertionError(f'read the whole layer {layer!r}')
    def _hand(self, rows): self.most = max(self.most, len(rows)); return rows
    def class_rows(self, layer, c): return self._hand(self._signals[layer][self.labels == c])
    def iter_rows(self, layer, chunk=3):
        for s in range(0, len(self), chunk): yield s, self._hand(self._signals[layer][s:s + chunk])
    def quantile(self, layer, q): return np.quantile(self._signals[layer], q)


def guarded(ss):
    return ClassAtATime({k: ss[k] for k in ss.layers}, ss.labels, classes=ss.classes)


def direct(ss, thr, p):
    "The definition: v_i significant for C when #{X in C: sigma(X)_i > thr} >= p% of |C|, by loops, exactly."
    a, out = ss['L'].astype(np.float64), []
    for c in range(len(ss.classes)):
        rows = a[ss.labels == c]
        out.append([Fraction(int((rows[:, i] > thr).sum())) * 100 >= Fraction(p) * len(rows) for i in range(a.shape[1])])
    return np.array(out, dtype=bool)


@settings(**SETTINGS)
@given(ss=signal_sets(), q=st.floats(0, 1), p=percent)
def test_incidence_equals_definition_quantile(ss, q, p):
    inc = significance(ss, 'L', q=q, p=p)
    thr = np.quantile(ss['L'], q)
    assert inc.attrs['threshold'] == pytest.approx(thr)
    np.testing.assert_array_equal(inc.to_numpy(), direct(ss, inc.attrs['threshold'], p))
    assert list(inc.index) == ss.classes and list(inc.columns) == [f'v{i}' for i in range(ss['L'].shape[1])]
    assert inc.dtypes.eq(bool).all()


@settings(**SETTINGS)
@given(ss=signal_sets(), t=st.sampled_from([-2., -0.5, 0., 0.5, 1., 1.25]), p=percent)
def test_incidence_equals_definition_value(ss, t, p):
    inc = significance(ss, 'L', threshold=t, p=p)
    np.testing.assert_array_equal(inc.to_numpy(), direct(ss, t, p))
    frac = significance_fractions(ss, 'L', threshold=t)
    a = ss['L']
    want = [[np.mean(a[ss.labels == c, i] > t) for i in range(a.shape[1])] for c in range(len(ss.classes))]
    np.testing.assert_allclose(frac.to_numpy(), want)


@settings(**SETTINGS)
@given(ss=signal_sets(), qs=st.lists(st.floats(0, 1), min_size=1, max_size=4),
       ps=st.lists(percent, min_size=1, max_size=3))
def test_family_matches_significance_and_hypergraphs(ss, qs, ps):
    fam = hypergraph_family(ss, 'L', qs, ps)
    assert len(fam.summary) == len(qs) * len(ps)
    for row in fam.summary.itertuples():
        inc = significance(ss, 'L', q=row.q, p=row.p)
        np.testing.assert_array_equal(fam.matrix(q=row.q, p=row.p), inc.to_numpy())
        H = to_hypergraph(inc)
        G = semantic_hierarchy(H)
        depth = nx.dag_longest_path_length(G) + 1 if len(G) else 0
        assert (row.nodes, row.edges, row.incidences) == (len(H.nodes), len(H.edges), int(inc.to_numpy().sum()))
        assert (row.equivalence_classes, row.hierarchy_edges, row.depth) == (len(G), G.number_of_edges(), depth)
        assert G.graph['depth'] == depth


incidences = st.integers(1, 7).flatmap(lambda e: st.integers(1, 12).flatmap(
    lambda n: st.lists(st.booleans(), min_size=e * n, max_size=e * n).map(
        lambda b: pd.DataFrame(np.array(b).reshape(e, n), index=[f'c{j}' for j in range(e)],
                               columns=[f'v{i}' for i in range(n)]))))


def hyperedge_sets(inc):
    return {v: frozenset(inc.index[inc[v].to_numpy()]) for v in inc.columns if inc[v].any()}


@settings(**SETTINGS)
@given(inc=incidences)
def test_equivalence_classes_partition_and_labels(inc):
    eq = equivalence_classes(inc)
    sets = hyperedge_sets(inc)
    members = [v for vs in eq['vectors'] for v in vs]
    assert sorted(members) == sorted(sets) and len(members) == len(set(members))   # a partition of the nodes
    assert eq['size'].sum() == len(sets)
    for lab, row in eq.iterrows():
        assert {sets[v] for v in row['vectors']} == {frozenset(row['edges'])}     # same hyperedges inside a class
        lowest = min(row['vectors'], key=lambda v: int(v[1:]))
        assert lab == f"{lowest} ({len(row['vectors'])})" and row['representative'] == lowest
        assert row['n_edges'] == len(row['edges'])
    assert len(eq) == len(set(sets.values()))                                       # different classes differ
    assert list(eq['n_edges']) == sorted(eq['n_edges'], reverse=True)


@settings(**SETTINGS)
@given(inc=incidences)
def test_hasse_is_transitive_reduction(inc):
    eq = equivalence_classes(inc)
    sets = {lab: frozenset(e) for lab, e in eq['edges'].items()}
    P = containment_order(inc)
    assert set(P.edges) == {(a, b) for a in sets for b in sets if sets[a] > sets[b]}   # eq. (18), brute force
    G = semantic_hierarchy(inc)
    assert set(G.nodes) == set(sets)
    assert set(G.edges) == set(nx.transitive_reduction(P).edges)
    for n, d in G.nodes(data=True):      # level = longest chain from a maximal class
        tops = [t for t in G if G.in_degree(t) == 0]
        lens = [len(path) - 1 for t in tops for path in nx.all_simple_paths(G, t, n)] + ([0] if n in tops else [])
        assert d['level'] == max(lens)


@settings(**SETTINGS)
@given(inc=incidences)
def test_hypergraph_roundtrip(inc):
    H = to_hypergraph(inc)
    assert set(H.edges) == {e for e in inc.index if inc.loc[e].any()}
    assert set(H.nodes) == {v for v in inc.columns if inc[v].any()}
    back = incidence_table(H)
    kept = inc.loc[inc.any(axis=1), inc.any(axis=0)]
    pd.testing.assert_frame_equal(back.loc[kept.index, kept.columns], kept, check_names=False)
    assert equivalence_classes(H).equals(equivalence_classes(inc))
    assert set(semantic_hierarchy(H).edges) == set(semantic_hierarchy(inc).edges)


def test_vector_order_natural():
    inc = pd.DataFrame([[True, True, True]], index=['a'], columns=['v10', 'v2', 'v7'])
    assert equivalence_classes(inc).index.tolist() == ['v2 (3)']
    assert incidence_table(to_hypergraph(inc)).columns.tolist() == ['v2', 'v7', 'v10']


@pytest.fixture
def ss():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    a = rng.normal(size=(40, 6))
    a[labels < 2, 0] += 5       # v0 for classes 0, 1
    a[labels == 0, 1] += 5      # v1 for class 0
    a[:, 2] += 5                # v2 for all
    return SignalSet({'conv': a, 'fc': a[:, :3]}, labels, classes=['zero', 'one', 'two', 'three'])


def test_planted_structure(ss):
    inc = significance(ss, 'conv', q=0.6, p=75)
    assert inc.index.tolist() == ['zero', 'one', 'two', 'three']
    H = layer_hypergraph(ss, 'conv', q=0.6, p=75)
    assert H.incidence_dict == {'zero': ['v0', 'v1', 'v2'], 'one': ['v0', 'v2'], 'two': ['v2'], 'three': ['v2']}
    G = semantic_hierarchy(H)
    assert sorted(G.edges) == [('v0 (1)', 'v1 (1)'), ('v2 (1)', 'v0 (1)')] and G.graph['depth'] == 3


@pytest.mark.parametrize('q,msg', [(-0.1, 'quantile level in [0, 1]'), (1.5, 'quantile level in [0, 1]'),
                                   (85, 'did you mean 0.85'), (np.nan, 'quantile level'), ('0.8', 'must be a number'),
                                   ([0.5, 0.6], 'single number')])
def test_bad_q(ss, q, msg):
    with pytest.raises((ValueError, TypeError), match=msg.replace('[', r'\[').replace(']', r'\]').replace('.', r'\.')):
        significance(ss, 'conv', q, 75)


@pytest.mark.parametrize('p', [0, -5, 100.01, 150, np.nan])
def test_bad_p(ss, p):
    with pytest.raises(ValueError, match=r'p must be a percentage in \(0, 100\]'):
        significance(ss, 'conv', 0.5, p)
    with pytest.raises(ValueError, match=r'\(0, 100\]'):
        hypergraph_family(ss, 'conv', [0.5], [50, p])


def test_threshold_instead_of_q(ss):
    with pytest.raises(ValueError, match='finite signal value'):
        significance(ss, 'conv', threshold=np.inf)
    for f in (significance, significance_fractions, layer_hypergraph, significance_threshold):
        with pytest.raises(TypeError, match='not both'):
            f(ss, 'conv', q=0.5, threshold=1.0)
        with pytest.raises(TypeError, match='give either q='):
            f(ss, 'conv')
    with pytest.raises(TypeError, match='not both'):
        hypergraph_family(ss, 'conv', qs=[0.5], thresholds=[1.0])
    # any finite value is fine as a threshold, also outside [0, 1]
    assert significance(ss, 'conv', threshold=3.0).to_numpy().sum() > 0
    assert significance_threshold(ss, 'conv', threshold=3.0) == 3.0
    assert significance_threshold(ss, 'conv', q=0.5) == pytest.approx(np.median(ss['conv']))
    t = significance_threshold(ss, 'conv', q=0.7)
    assert significance(ss, 'conv', threshold=t).equals(significance(ss, 'conv', q=0.7))
    assert significance(ss, 'conv', q=0.7).attrs == {'layer': 'conv', 'q': 0.7, 'p': 75.0, 'threshold': t}


def test_uncollected_layer(ss):
    for f in (lambda: significance(ss, 'conv9', 0.5), lambda: layer_hypergraph(ss, 'conv9', 0.5),
              lambda: hypergraph_family(ss, 'conv9', [0.5], [75]), lambda: image_hypergraph(ss, 'conv9', [0])):
        with pytest.raises(KeyError, match="layer 'conv9' was not collected.*collected layers: conv, fc"):
            f()
    with pytest.raises(TypeError, match='SignalSet'):
        significance({'conv': ss['conv']}, 'conv', 0.5)


def test_non_finite_signals():
    a = np.ones((6, 2)); a[4, 1] = np.nan
    ss = SignalSet({'L': a}, labels=[0, 0, 0, 1, 1, 1], classes=['a', 'b'])
    with pytest.raises(ValueError, match="non-finite signals"):
        significance(ss, 'L', threshold=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        hypergraph_family(ss, 'L', [0.5], [75])


def test_empty_class():
    ss = SignalSet({'L': np.arange(12.).reshape(4, 3)}, labels=[0, 0, 2, 2], classes=['a', 'b', 'c'])
    with pytest.raises(ValueError, match=r"no images in this SignalSet \('b'\).*empty_classes='drop'"):
        significance(ss, 'L', 0.5)
    with pytest.raises(ValueError, match='no images'):
        hypergraph_family(ss, 'L', [0.5], [75])
    inc = significance(ss, 'L', 0.5, empty_classes='drop')
    assert inc.index.tolist() == ['a', 'c']
    np.testing.assert_array_equal(inc.to_numpy(), [[False] * 3, [True] * 3])
    fam = hypergraph_family(ss, 'L', [0.5], [75], empty_classes='drop')
    assert fam.incidence(q=0.5, p=75).equals(inc)
    with pytest.raises(ValueError, match="'raise' or 'drop'"):
        significance(ss, 'L', 0.5, empty_classes='keep')


@settings(**SETTINGS)
@given(ss=signal_sets(), q=st.floats(0, 1), p=percent, pick=st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True))
def test_stored_path_equals_memory(ss, q, p, pick):
    "Read a class or a block at a time (as a store is) and never a whole layer: the same tables, families and images."
    g = guarded(ss)
    pd.testing.assert_frame_equal(significance(g, 'L', q, p), significance(ss, 'L', q, p))
    pd.testing.assert_frame_equal(significance_fractions(g, 'L', q), significance_fractions(ss, 'L', q))
    assert significance_threshold(g, 'L', q=q) == significance_threshold(ss, 'L', q=q)
    assert layer_hypergraph(g, 'L', q, p).incidence_dict == layer_hypergraph(ss, 'L', q, p).incidence_dict
    fg, fm = hypergraph_family(g, 'L', [q, 0.5], [p, 75]), hypergraph_family(ss, 'L', [q, 0.5], [p, 75])
    pd.testing.assert_frame_equal(fg.summary, fm.summary)
    pick = [i for i in pick if i < len(ss)]
    assume(pick)
    pd.testing.assert_frame_equal(image_significance(g, 'L', pick, q=q), image_significance(ss, 'L', pick, q=q))
    assert g.most <= max(3, ss.class_counts().max())          # one class (or one block of 3) at a time


@pytest.mark.skipif(not hasattr(SignalSet, 'open'), reason='needs the stored SignalSet (SignalSet.open)')
def test_real_store_equals_memory(tmp_path):
    "A store written by collect_signals gives the hypergraphs of the in-memory SignalSet of the same run."
    from convsvd.models import default_model, digits_dataset
    from convsvd.signals import collect_signals
    model, data = default_model(), digits_dataset(train=False)
    mem = collect_signals(model, data, layers=['conv2', 'fc1'], progress=False)
    st_ = collect_signals(model, data, layers=['conv2', 'fc1'], progress=False, store=tmp_path / 'store')
    for L in ('conv2', 'fc1'):
        pd.testing.assert_frame_equal(significance(st_, L, 0.85), significance(mem, L, 0.85))
        pd.testing.assert_frame_equal(hypergraph_family(st_, L, [0.8, 0.9], [50, 75]).summary,
                                      hypergraph_family(mem, L, [0.8, 0.9], [50, 75]).summary)
        pd.testing.assert_frame_equal(image_significance(st_, L, [3, 400, 7]), image_significance(mem, L, [3, 400, 7]))


def test_nothing_significant(ss):
    with pytest.warns(UserWarning, match='empty'):
        H = layer_hypergraph(ss, 'conv', q=1.0, p=75)          # nothing exceeds the maximum signal
    assert H.shape == (0, 0)
    assert len(equivalence_classes(H)) == 0 and len(semantic_hierarchy(H)) == 0
    assert semantic_hierarchy(H).graph['depth'] == 0
    assert len(hierarchy_layout(semantic_hierarchy(H))) == 0
    fig = plot_hypergraph(H)
    assert isinstance(fig, plt.Figure) and 'empty hypergraph' in ' '.join(t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    fig = plot_semantic_hierarchy(H)
    assert 'no semantic hierarchy' in ' '.join(t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)
    fig = plot_hypergraph_hierarchy(H)
    assert isinstance(fig, plt.Figure)
    plt.close(fig)
    row = hypergraph_family(ss, 'conv', [1.0], [75]).summary.iloc[0]
    assert (row.nodes, row.edges, row.equivalence_classes, row.depth) == (0, 0, 0, 0)


def test_everything_significant(ss):
    H = layer_hypergraph(ss, 'conv', threshold=ss['conv'].min() - 1, p=100)
    assert H.shape == (6, 4)
    eq = equivalence_classes(H)
    assert eq.index.tolist() == ['v0 (6)'] and set(eq.iloc[0]['edges']) == {'zero', 'one', 'two', 'three'}
    G = semantic_hierarchy(H)
    assert list(G.nodes) == ['v0 (6)'] and G.number_of_edges() == 0 and G.graph['depth'] == 1
    fig = plot_hypergraph(H)        # one node in every class: one row with a dot per class, not concentric bands
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['v0 (6)']
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == sorted(['zero', 'one', 'two', 'three'])
    assert len(ax.collections[1].get_offsets()) == 4
    plt.close(fig)
    fig = plot_hypergraph(H, style='bands')
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert 'all 4 classes' in texts and not texts & {'zero', 'one', 'two', 'three'}    # one band, not four
    plt.close(fig)


def test_image_hypergraph(ss):
    thr = np.quantile(ss['conv'], 0.5)
    inc = image_significance(ss, 'conv', [0, 25])                 # figure 10's median by default
    np.testing.assert_array_equal(inc.to_numpy(), ss['conv'][[0, 25]] > thr)
    assert inc.index.tolist() == ['#0 (zero)', '#25 (two)'] and inc.attrs['q'] == 0.5
    np.testing.assert_array_equal(image_significance(ss, 'conv', [25, 0], threshold=1.0).to_numpy(), ss['conv'][[25, 0]] > 1)
    H = image_hypergraph(ss, 'conv', [0, 25], q=0.5, names=['first', 'second'])
    assert set(H.edges) <= {'first', 'second'}
    with pytest.raises(IndexError, match=r'\[0, 40\)'):
        image_significance(ss, 'conv', [0, 40])
    with pytest.raises(ValueError, match='distinct'):
        image_significance(ss, 'conv', [3, 3])
    with pytest.raises(TypeError, match='integer positions'):
        image_significance(ss, 'conv', [0.5])
    with pytest.raises(ValueError, match='distinct strings'):
        image_significance(ss, 'conv', [0, 1], names=['a'])


def test_family_lookup_and_lazy(ss):
    fam = hypergraph_family(ss, 'conv', [0.5, 0.75], [50, 75, 100])
    many = hypergraph_family(ss, 'conv', [0.1, 0.5, 0.75, 0.9, 1.0], [75])
    np.testing.assert_array_equal(many.thresholds, [ss.quantile('conv', q) for q in [0.1, 0.5, 0.75, 0.9, 1.0]])
    assert len(fam) == 6 and list(fam)[0] == {'q': 0.5, 'p': 50.0}
    assert set(fam.summary.columns) >= {'q', 'p', 'threshold', 'nodes', 'edges', 'equivalence_classes', 'depth'}
    H = fam.hypergraph(0.75, 75)
    assert isinstance(H, hnx.Hypergraph) and H.name == 'conv (75% quantile, 75% majority)'
    assert H.incidence_dict == layer_hypergraph(ss, 'conv', 0.75, 75).incidence_dict
    with pytest.raises(KeyError, match='not in this family'):
        fam.incidence(0.6, 75)
    with pytest.raises(TypeError, match='give q='):
        fam.incidence(threshold=1.0, p=75)
    byval = hypergraph_family(ss, 'conv', thresholds=[1.0, 2.0], ps=[75])
    assert 'q' not in byval.summary and list(byval)[1] == {'threshold': 2.0, 'p': 75.0}
    assert byval.incidence(threshold=1.0, p=75).equals(significance(ss, 'conv', threshold=1.0))
    with pytest.raises(TypeError, match='grid of thresholds'):
        byval.matrix(q=0.5, p=75)
    fig = fam.plot(); assert isinstance(fig, plt.Figure); plt.close(fig)
    fig = byval.plot('nodes'); plt.close(fig)


def test_family_plot_checks_before_opening_a_figure(ss):
    fam = hypergraph_family(ss, 'conv', [0.5, 0.75], [50, 75])
    before = plt.get_fignums()
    for bad in (['width'], ['nodes', 'q'], []):
        with pytest.raises(KeyError, match='summary column'):
            fam.plot(values=bad)
    assert plt.get_fignums() == before                          # no figure leaked


def test_monotone_in_q_and_p(ss):
    fam = hypergraph_family(ss, 'conv', np.linspace(0, 1, 11), [10, 50, 75, 90, 100])
    t = fam.summary.pivot(index='q', columns='p', values='incidences').to_numpy()
    assert (np.diff(t, axis=0) <= 0).all() and (np.diff(t, axis=1) <= 0).all()


@settings(**SETTINGS)
@given(inc=incidences, width=st.one_of(st.none(), st.integers(1, 4)))
def test_hierarchy_layout(inc, width):
    G = semantic_hierarchy(inc)
    assume(len(G) > 0)
    lay = hierarchy_layout(G, max_width=width)
    assert sorted(lay.index) == sorted(G.nodes)
    assert all(lay.loc[a, 'y'] < lay.loc[b, 'y'] for a, b in G.edges)          # every arrow points down
    assert all(lay.loc[n, 'level'] == d['level'] for n, d in G.nodes(data=True))
    per_row = lay.groupby('y').size()
    assert width is None or per_row.max() <= width
    assert not lay.duplicated(['x', 'y']).any()                                # no two classes in one place


def test_plots_return_figures(ss):
    H = layer_hypergraph(ss, 'conv', q=0.6, p=75)
    for collapse in (True, False):
        fig = plot_hypergraph(H, collapse=collapse, style='bands')
        labels = {t.get_text() for t in fig.axes[0].texts}
        assert ('v0 (1)' in labels) == collapse
        plt.close(fig)
    fig = plot_semantic_hierarchy(H)
    texts = ' '.join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert all(lab in texts for lab in ['v2 (1)', 'v0 (1)', 'v1 (1)'])
    assert 'all 4 classes' in texts and '{zero}' in texts and ('{zero, one}' in texts or '{one, zero}' in texts)  # class names
    plt.close(fig)
    with pytest.raises(TypeError, match='never runs the model'):
        plot_hypergraph_hierarchy(ss, 'conv', 0.6, 75)
    with pytest.raises(TypeError, match='hierarchy_exemplars'):
        plot_semantic_hierarchy(H, ss)
    with pytest.raises(ValueError, match="style must be"):
        plot_hypergraph(H, style='rubber')


class Normalised(torch.utils.data.Dataset):
    "Random RGB images in [0, 1] returned through a torchvision Normalize, as ImageNet pipelines do."
    def __init__(self, n=12):
        import torchvision.transforms as T
        g = torch.Generator().manual_seed(0)
        self.raw, self.labels = torch.rand(n, 3, 6, 6, generator=g), [i % 3 for i in range(n)]
        self.transform = T.Compose([T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    def __len__(self): return len(self.raw)
    def __getitem__(self, i): return self.transform(self.raw[i]), self.labels[i]


def test_exemplars_in_real_colours():
    data = Normalised()
    a = np.random.default_rng(1).normal(size=(len(data), 4))
    ss = SignalSet({'L': a}, data.labels, classes=['cat', 'dog', 'fox'])
    ex = node_exemplars(ss, 'L', ['v1', 2], data, classes=['dog'], k=2)
    want = np.argsort(-(a[:, 1] + a[:, 2]) + 1e9 * (np.array(data.labels) != 1))[:2]   # the best two dogs
    assert ex['index'] == want.tolist() and ex['classes'] == ['dog', 'dog'] and ex['maps'] is None
    for img, i in zip(ex['images'], ex['index']):
        np.testing.assert_allclose(img, data.raw[i].permute(1, 2, 0).numpy(), atol=1e-6)   # the normalisation undone


def test_default_model_figures():
    "Figure 6 on the real default model: exemplary images and signal maps under each equivalence class, prepared once."
    from convsvd.models import default_model, digits_dataset
    from convsvd.signals import collect_signals
    model, data = default_model(), digits_dataset(train=False)
    ss = collect_signals(model, data, layers=['conv2', 'fc1'], progress=False).sample_per_class(50)
    H = layer_hypergraph(ss, 'conv2', 0.85, 75)
    eq, G = equivalence_classes(H), semantic_hierarchy(H)
    assert eq.iloc[0]['n_edges'] == 10                     # conv2's most general class holds every digit
    ex = hierarchy_exemplars(ss, 'conv2', G, data, k=2, model=model)
    assert set(ex) == set(G.nodes) and all(len(e['images']) == len(e['maps']) == 2 for e in ex.values())
    fig = plot_semantic_hierarchy(G, ex)
    assert len(fig.axes) == 1 + len(eq) * 2 * 2          # background + (2 images + 2 signal maps) per class
    plt.close(fig)
    H1 = layer_hypergraph(ss, 'fc1', 0.95, 75)
    G1 = semantic_hierarchy(H1)
    ex1 = hierarchy_exemplars(ss, 'fc1', G1, data, k=2, model=model)
    assert all(e['maps'] is None for e in ex1.values())  # a Linear layer has no spatial maps
    fig = plot_hypergraph_hierarchy(H1, ex1, hierarchy=G1)
    assert isinstance(fig, plt.Figure)
    plt.close(fig)

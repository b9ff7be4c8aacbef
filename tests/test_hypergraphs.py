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
import hypernetx as hnx
from hypothesis import given, settings, HealthCheck, strategies as st

from convsvd.signals import SignalSet
from convsvd.hypergraphs import (significance, significance_fractions, significance_threshold, layer_hypergraph,
                                 image_significance, image_hypergraph, to_hypergraph, incidence_table,
                                 equivalence_classes, containment_order, semantic_hierarchy, hypergraph_family,
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


def direct(ss, thr, p):
    "The definition: v_i significant for C when #{X in C: sigma(X)_i > thr} >= p% of |C|, by loops, exactly."
    a, out = ss['L'], []
    for c in range(len(ss.classes)):
        rows = a[ss.labels == c]
        out.append([Fraction(int((rows[:, i] > thr).sum())) * 100 >= Fraction(p) * len(rows) for i in range(a.shape[1])])
    return np.array(out, dtype=bool)


@settings(**SETTINGS)
@given(ss=signal_sets(), q=st.floats(0, 1), p=percent)
def test_incidence_equals_definition_quantile(ss, q, p):
    inc = significance(ss, 'L', q, p)
    thr = np.quantile(ss['L'], q)
    assert inc.attrs['threshold'] == pytest.approx(thr)
    np.testing.assert_array_equal(inc.to_numpy(), direct(ss, inc.attrs['threshold'], p))
    assert list(inc.index) == ss.classes and list(inc.columns) == [f'v{i}' for i in range(ss['L'].shape[1])]
    assert inc.dtypes.eq(bool).all()


@settings(**SETTINGS)
@given(ss=signal_sets(), t=st.sampled_from([-2., -0.5, 0., 0.5, 1., 1.25]), p=percent)
def test_incidence_equals_definition_value(ss, t, p):
    inc = significance(ss, 'L', t, p, q_is_quantile=False)
    np.testing.assert_array_equal(inc.to_numpy(), direct(ss, t, p))
    frac = significance_fractions(ss, 'L', t, q_is_quantile=False)
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
        inc = significance(ss, 'L', row.q, row.p)
        np.testing.assert_array_equal(fam.matrix(row.q, row.p), inc.to_numpy())
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


def test_q_value_mode(ss):
    with pytest.raises(ValueError, match='finite threshold'):
        significance(ss, 'conv', np.inf, 75, q_is_quantile=False)
    # any finite value is fine as a threshold, also outside [0, 1]
    assert significance(ss, 'conv', 3.0, 75, q_is_quantile=False).to_numpy().sum() > 0
    assert significance_threshold(ss, 'conv', 3.0, q_is_quantile=False) == 3.0
    assert significance_threshold(ss, 'conv', 0.5) == pytest.approx(np.median(ss['conv']))


def test_uncollected_layer(ss):
    for f in (lambda: significance(ss, 'conv9', 0.5), lambda: layer_hypergraph(ss, 'conv9', 0.5),
              lambda: hypergraph_family(ss, 'conv9', [0.5], [75]), lambda: image_hypergraph(ss, 'conv9', [0])):
        with pytest.raises(KeyError, match="layer 'conv9' was not collected.*collected layers: conv, fc"):
            f()
    with pytest.raises(TypeError, match='SignalSet'):
        significance({'conv': ss['conv']}, 'conv', 0.5)


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
    assert fam.incidence(0.5, 75).equals(inc)
    with pytest.raises(ValueError, match="'raise' or 'drop'"):
        significance(ss, 'L', 0.5, empty_classes='keep')


def test_nothing_significant(ss):
    with pytest.warns(UserWarning, match='empty'):
        H = layer_hypergraph(ss, 'conv', q=1.0, p=75)          # nothing exceeds the maximum signal
    assert H.shape == (0, 0)
    assert len(equivalence_classes(H)) == 0 and len(semantic_hierarchy(H)) == 0
    assert semantic_hierarchy(H).graph['depth'] == 0
    fig = plot_hypergraph(H)
    assert isinstance(fig, plt.Figure) and 'empty hypergraph' in ' '.join(t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    fig = plot_semantic_hierarchy(H)
    assert 'no semantic hierarchy' in ' '.join(t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)
    fig = plot_hypergraph_hierarchy(ss, 'conv', q=1.0, p=75)
    assert isinstance(fig, plt.Figure)
    plt.close(fig)
    row = hypergraph_family(ss, 'conv', [1.0], [75]).summary.iloc[0]
    assert (row.nodes, row.edges, row.equivalence_classes, row.depth) == (0, 0, 0, 0)


def test_everything_significant(ss):
    H = layer_hypergraph(ss, 'conv', q=ss['conv'].min() - 1, p=100, q_is_quantile=False)
    assert H.shape == (6, 4)
    eq = equivalence_classes(H)
    assert eq.index.tolist() == ['v0 (6)'] and set(eq.iloc[0]['edges']) == {'zero', 'one', 'two', 'three'}
    G = semantic_hierarchy(H)
    assert list(G.nodes) == ['v0 (6)'] and G.number_of_edges() == 0 and G.graph['depth'] == 1
    fig = plot_hypergraph(H); plt.close(fig)


def test_image_hypergraph(ss):
    thr = np.quantile(ss['conv'], 0.5)
    inc = image_significance(ss, 'conv', [0, 25], q=0.5)
    np.testing.assert_array_equal(inc.to_numpy(), ss['conv'][[0, 25]] > thr)
    assert inc.index.tolist() == ['#0 (zero)', '#25 (two)']
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
    many = hypergraph_family(ss, 'conv', [0.1, 0.5, 0.75, 0.9, 1.0], [75])    # one sort serves many levels
    np.testing.assert_array_equal(many.thresholds, [ss.quantile('conv', q) for q in [0.1, 0.5, 0.75, 0.9, 1.0]])
    assert len(fam) == 6 and list(fam)[0] == (0.5, 50)
    assert set(fam.summary.columns) >= {'q', 'p', 'threshold', 'nodes', 'edges', 'equivalence_classes', 'depth'}
    H = fam.hypergraph(0.75, 75)
    assert isinstance(H, hnx.Hypergraph)
    assert H.incidence_dict == layer_hypergraph(ss, 'conv', 0.75, 75).incidence_dict
    with pytest.raises(KeyError, match='not in this family'):
        fam.incidence(0.6, 75)
    fig = fam.plot(); assert isinstance(fig, plt.Figure); plt.close(fig)
    with pytest.raises(KeyError, match='summary column'):
        fam.plot(values=['width'])


def test_monotone_in_q_and_p(ss):
    fam = hypergraph_family(ss, 'conv', np.linspace(0, 1, 11), [10, 50, 75, 90, 100])
    t = fam.summary.pivot(index='q', columns='p', values='incidences').to_numpy()
    assert (np.diff(t, axis=0) <= 0).all() and (np.diff(t, axis=1) <= 0).all()


def test_plots_return_figures(ss):
    H = layer_hypergraph(ss, 'conv', q=0.6, p=75)
    for collapse in (True, False):
        fig = plot_hypergraph(H, collapse=collapse)
        labels = {t.get_text() for t in fig.axes[0].texts}
        assert ('v0 (1)' in labels) == collapse
        plt.close(fig)
    fig = plot_semantic_hierarchy(H)
    texts = ' '.join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert all(lab in texts for lab in ['v2 (1)', 'v0 (1)', 'v1 (1)'])
    plt.close(fig)


def test_default_model_figures():
    "Figure 6 on the real default model: exemplary images and signal maps beside each equivalence class."
    from convsvd.models import default_model, digits_dataset
    from convsvd.signals import collect_signals
    model, data = default_model(), digits_dataset(train=False)
    ss = collect_signals(model, data, layers=['conv2', 'fc1'], progress=False).sample_per_class(50)
    H = layer_hypergraph(ss, 'conv2', 0.85, 75)
    eq = equivalence_classes(H)
    assert eq.iloc[0]['n_edges'] == 10                     # conv2's most general class holds every digit
    fig = plot_semantic_hierarchy(H, ss, 'conv2', data, model, k=2)
    assert len(fig.axes) == 1 + len(eq) * 2 * 2          # background + (2 images + 2 signal maps) per class
    plt.close(fig)
    fig = plot_hypergraph_hierarchy(ss, 'fc1', 0.95, 75, data=data, model=model, k=2)
    assert isinstance(fig, plt.Figure)
    plt.close(fig)

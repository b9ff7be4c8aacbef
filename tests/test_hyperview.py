"Tests of convsvd.hyperview's Python side: the data it sends for known hypergraphs, selection, updates, images, static copies."
import configparser, json, shutil, subprocess, xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import traitlets
from hypothesis import assume, given, settings, HealthCheck, strategies as st

import convsvd
from convsvd.signals import SignalSet
from convsvd.hypergraphs import equivalence_classes, semantic_hierarchy, hypergraph_family, layer_hypergraph, vector_names
from convsvd.hyperview import HyperView, view_data, view_svg, png_uri, ASSETS

SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SVG_NS = '{http://www.w3.org/2000/svg}'


def table(rows:dict, n:int)->pd.DataFrame:
    "An incidence table: class -> the indices of its vectors."
    M = np.zeros((len(rows), n), bool)
    for i, vs in enumerate(rows.values()): M[i, list(vs)] = True
    return pd.DataFrame(M, index=list(rows), columns=vector_names(n))


KNOWN = table({'cat': [0, 1, 2, 5], 'dog': [0, 1, 2], 'owl': [0, 3], 'emu': [], 'elk': [0, 3, 4]}, 7)
# by hand: [v0] in every non-empty class; [v1] = {v1, v2} in cat, dog; [v3] in owl, elk; [v4] in elk; [v5] in cat; v6 in none


def recording(view):
    "Capture what the widget sends to the browser."
    sent = []
    view.comm.send = lambda data=None, buffers=None, **kw: sent.append(data)
    return sent


def test_known_hypergraph_data():
    d = view_data(KNOWN)
    assert d['classes'] == ['cat', 'dog', 'owl', 'emu', 'elk']                       # all rows, in the table's order
    names = lambda c: {d['classes'][i] for i in c}
    assert names(d['columns']) == {'cat', 'dog', 'owl', 'elk'}                       # 'emu' holds nothing: no column
    got = {n['id']: (n['vectors'], names(n['edges'])) for n in d['nodes']}
    assert got == {'v0 (1)': ([0], {'cat', 'dog', 'owl', 'elk'}), 'v1 (2)': ([1, 2], {'cat', 'dog'}),
                   'v3 (1)': ([3], {'owl', 'elk'}), 'v4 (1)': ([4], {'elk'}), 'v5 (1)': ([5], {'cat'})}
    ids = [n['id'] for n in d['nodes']]
    links = {(ids[a], ids[b]) for a, b in d['links']}
    assert links == {('v0 (1)', 'v1 (2)'), ('v0 (1)', 'v3 (1)'), ('v1 (2)', 'v5 (1)'), ('v3 (1)', 'v4 (1)')}
    assert {n['id']: n['level'] for n in d['nodes']} == {'v0 (1)': 0, 'v1 (2)': 1, 'v3 (1)': 1, 'v4 (1)': 2, 'v5 (1)': 2}
    assert ids[0] == 'v0 (1)'                                                        # the most general class first


incidences = st.integers(1, 7).flatmap(lambda e: st.integers(1, 10).flatmap(
    lambda n: st.lists(st.booleans(), min_size=e * n, max_size=e * n).map(
        lambda b: pd.DataFrame(np.array(b).reshape(e, n), index=[f'c{j}' for j in range(e)], columns=vector_names(n)))))


@settings(**SETTINGS)
@given(inc=incidences, width=st.sampled_from(['auto', None, 1, 3]))
def test_data_matches_the_hierarchy(inc, width):
    d = view_data(inc, max_width=width)
    eq, G = equivalence_classes(inc), semantic_hierarchy(inc)
    assert sorted(n['id'] for n in d['nodes']) == sorted(eq.index)
    for n in d['nodes']:
        assert ['v%d' % v for v in n['vectors']] == eq.loc[n['id'], 'vectors']
        assert {d['classes'][c] for c in n['edges']} == set(eq.loc[n['id'], 'edges'])
        assert n['level'] == G.nodes[n['id']]['level']
    ids = [n['id'] for n in d['nodes']]
    assert sorted((ids[a], ids[b]) for a, b in d['links']) == sorted(G.edges)
    assert [(n['y'], n['x']) for n in d['nodes']] == sorted((n['y'], n['x']) for n in d['nodes'])
    assert all(d['nodes'][a]['y'] < d['nodes'][b]['y'] for a, b in d['links'])       # arrows point down
    assert sorted(d['columns']) == [i for i, e in enumerate(inc.index) if inc.loc[e].any()]
    member = [[c in n['edges'] for n in d['nodes']] for c in d['columns']]          # columns sorted by their rows
    assert all([not x for x in a] <= [not x for x in b] for a, b in zip(member, member[1:]))


def test_selection_round_trip():
    view = HyperView(KNOWN)
    seen = []
    view.observe(lambda ch: seen.append(ch['new']), 'selected')
    view.set_state({'selected': 'v3 (1)'})                      # a click in the browser arrives as this
    assert view.selected == 'v3 (1)' and seen == ['v3 (1)']
    assert view.selected_vectors == [3] and sorted(view.selected_classes) == ['elk', 'owl']
    sent = recording(view)
    view.selected = 'v1 (2)'                                   # highlights it in the browser
    assert sent == [{'method': 'update', 'state': {'selected': 'v1 (2)'}, 'buffer_paths': []}]
    with pytest.raises(traitlets.TraitError, match=r"'v1 \(3\)' is not an equivalence class.*close matches: v1 \(2\)"):
        view.selected = 'v1 (3)'
    assert view.selected == 'v1 (2)'
    view.selected = None
    assert view.selected_node is None and view.selected_vectors == []


def test_update_sends_only_what_changed():
    ss = SignalSet({'L': np.random.default_rng(0).normal(size=(60, 8)) + np.repeat(np.eye(6, 8) * 3, 10, 0)},
                   np.repeat(np.arange(6), 10), classes=['a', 'b', 'c', 'd', 'e', 'f'])
    fam = hypergraph_family(ss, 'L', qs=[0.6, 0.8], ps=[75])
    view = HyperView(fam.incidence(q=0.6, p=75), exemplars=lambda label, vectors, classes: None)
    view.selected = view.nodes[-1]['id']
    sent = recording(view)
    view.show(fam.incidence(q=0.8, p=75))
    assert len(sent) == 1 and sent[0]['method'] == 'update'              # one message (hold_sync)
    assert 'classes' not in sent[0]['state'] and 'has_images' not in sent[0]['state']
    assert set(sent[0]['state']) <= {'nodes', 'columns', 'links', 'title', 'selected'}
    assert not any(m.get('method') == 'custom' for m in sent)             # no image is pushed
    assert view.title == 'L (80% quantile, 75% majority)'
    sent.clear()
    view.show(fam.incidence(q=0.8, p=75))
    assert sent == []                                                      # the same hypergraph: nothing to send


def test_selection_after_update():
    view = HyperView(KNOWN)
    view.selected = 'v4 (1)'
    view.show(KNOWN.drop(columns='v4'))
    assert view.selected is None                                           # gone: cleared
    view.selected = 'v5 (1)'
    view.show(KNOWN.drop(index='owl'))
    assert view.selected == 'v5 (1)'                                       # still there: kept


def entry(label):
    return dict(images=[np.full((5, 5), 0.5), np.ones((5, 5, 3))], classes=[label, label + '!'], maps=[np.eye(5), -np.eye(5)])


def test_images_on_request():
    calls = []
    def provider(label, vectors, classes):
        calls.append((label, tuple(vectors), tuple(sorted(classes))))
        return entry(label)
    view = HyperView(KNOWN, provider)
    assert view.has_images and calls == []                                 # nothing computed before it is asked
    replies = []
    view.send = lambda content, buffers=None: replies.append(content)
    n = next(x for x in view.nodes if x['id'] == 'v1 (2)')
    view._handle_custom_msg({'type': 'images', 'keys': [n['key'], 'nonsense']}, [])
    assert calls == [('v1 (2)', (1, 2), ('cat', 'dog'))]
    got = replies[-1]['images']
    assert list(got) == [n['key']]
    assert [x['caption'] for x in got[n['key']]['images']] == ['v1 (2)', 'v1 (2)!'] and len(got[n['key']]['maps']) == 2
    assert all(x['src'].startswith('data:image/png;base64,') for x in got[n['key']]['images'])
    view._handle_custom_msg({'type': 'images', 'keys': [n['key']]}, [])
    assert len(calls) == 1                                                 # encoded once, kept
    before = {x['id']: x['key'] for x in view.nodes}
    view.show(KNOWN.drop(index='owl'))
    after = {x['id']: x['key'] for x in view.nodes}
    assert after['v1 (2)'] == before['v1 (2)'] and after['v5 (1)'] == before['v5 (1)']   # unchanged classes: same key
    view.show(KNOWN, exemplars=provider)
    assert not set(x['key'] for x in view.nodes) & set(before.values())   # new exemplars: new keys


def test_exemplars_dict_and_bad_exemplars():
    view = HyperView(KNOWN, {'v0 (1)': entry('x')})
    imgs = view.images()
    assert list(imgs) == [view.nodes[0]['key']]
    with pytest.raises(TypeError, match='exemplars must be'):
        HyperView(KNOWN, exemplars=[1, 2])


def test_png_uri_roundtrip():
    from PIL import Image
    import base64, io
    a = np.random.default_rng(0).random((8, 8, 3))
    im = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_uri(a, size=8).split(',')[1]))))
    np.testing.assert_array_equal(im, (a * 255).round().astype(np.uint8))
    with pytest.raises(ValueError, match=r'\(h, w\)'):
        png_uri(np.zeros((2, 2, 2, 2)))


def svg_texts(svg):
    return [t.text for t in ET.fromstring(svg).iter(SVG_NS + 'text')]


def test_static_svg():
    view = HyperView(KNOWN, title='known')
    texts = svg_texts(view.to_svg())
    ids = [n['id'] for n in view.nodes]
    assert all(texts.count(i) == 2 for i in ids)                            # a row label and a box each
    assert {'cat', 'dog', 'owl', 'elk'} <= set(texts) and 'emu' not in texts and 'known' in texts
    root = ET.fromstring(view.to_svg())
    assert root.get('viewBox') and len(list(root.iter(SVG_NS + 'circle'))) == equivalence_classes(KNOWN)['n_edges'].sum()   # a dot per collapsed incidence
    empty = view_svg(view_data(KNOWN.iloc[:, 6:]))
    assert any('empty hypergraph' in (t or '') for t in svg_texts(empty))


def test_offline_html_and_bundle():
    view = HyperView(KNOWN, {'v0 (1)': entry('x')})
    page = view.to_html()
    module = page.split('<script type="module">', 1)[1].rsplit('</script>', 1)[0]
    assert '</script>' not in module and '<svg' in page                      # the static copy where scripts do not run
    assert view.nodes[0]['key'] in module                                    # the thumbnails embedded
    bundle, _ = view._repr_mimebundle_()
    assert {'application/vnd.jupyter.widget-view+json', 'text/html', 'text/plain'} <= set(bundle)
    big = HyperView(pd.DataFrame(np.eye(400, dtype=bool), index=[f'c{i}' for i in range(400)], columns=vector_names(400)))
    assert len(big._repr_mimebundle_()[0]['text/html']) < 1000             # a note, not megabytes


def test_assets_ship_in_the_package():
    for name in ('hyperview.js', 'hyperview.css'):
        assert (Path(convsvd.__file__).parent / 'assets' / name).is_file()
    assert ASSETS == Path(convsvd.__file__).parent / 'assets'
    view = HyperView(KNOWN)
    assert view._esm == (ASSETS / 'hyperview.js').read_text() and 'export default' in view._esm
    assert 'http://' not in view._esm.replace('http://www.w3.org/2000/svg', '') and 'https://' not in view._esm   # no CDN
    cfg = configparser.ConfigParser(); cfg.read(Path(convsvd.__file__).parents[1] / 'settings.ini')
    assert 'assets/*' in cfg['DEFAULT']['package_data']


@pytest.mark.skipif(shutil.which('node') is None, reason='node is not installed')
def test_module_loads():
    "The ES module parses and exports render (checked with Node, without a browser)."
    js = f"import(process.argv[1]).then((m) => console.log(typeof m.default.render))"
    out = subprocess.run(['node', '--input-type=module', '-e', js, (ASSETS / 'hyperview.js').as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == 'function', out.stderr


def test_large_hypergraph():
    "500-odd equivalence classes and 1000 hyperedges: the data stays compact (no timing asserted)."
    rng = np.random.default_rng(0)
    M = np.zeros((1000, 600), bool)
    M[:, :4] = True
    for j in range(4, 600): M[rng.choice(1000, rng.integers(1, 4), replace=False), j] = True
    view = HyperView(pd.DataFrame(M, index=[f'class {i}' for i in range(1000)], columns=vector_names(600)))
    assert len(view.columns) == 1000 and 450 <= len(view.nodes) <= 597
    assert len(json.dumps(view.nodes)) < 200 * len(view.nodes)
    assert view.nodes[0]['vectors'] == [0, 1, 2, 3] and len(view.nodes[0]['edges']) == 1000

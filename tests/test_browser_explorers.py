"""The HypergraphExplorer's hierarchy view and the ProfileExplorer in a real JupyterLab with headless Chromium
(pytest -m browser).

The server, Chromium and the waiting helpers are those of tests/test_browser.py (Debian's /usr/bin/chromium, never a
downloaded browser). The notebook served is a copy of the explorers notebook cut to what these tests look at (its
definitions, the default model and data, the HypergraphExplorer and the ProfileExplorer), so Run All takes well under
a minute. A click on a box of the semantic hierarchy at its drawn position must pick that equivalence class in the
kernel (the dropdown follows, the class maps redraw); a class picked in the dropdown must be highlighted in the view;
screenshots go to tests/_screenshots/."""
import json, re, time
from pathlib import Path

import pytest

from test_browser import (SHOTS, error_outputs, img_src, kernel_eval, open_notebook, serve_lab, sync_playwright, wait_drawn,
                          wait_text)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO/'nbs'/'11_explorers.ipynb'
RUN_ALL_TIMEOUT = 240


def _kept(cell)->bool:
    "The cells these tests need: definitions, imports, the model and data, the two explorers they drive."
    src = ''.join(cell['source'])
    if cell['cell_type'] != 'code': return True
    return ('#| export' in src or src.startswith('from fastcore.test') or src.startswith('model, test_data')
            or re.match(r'(hx|px) = \w+Explorer\(', src) is not None)


@pytest.fixture(scope='module')
def ex_lab(tmp_path_factory, sync_playwright):
    "JupyterLab serving the cut copy of the explorers notebook (no saved widget state: Run All draws the views)."
    nb = json.loads(NOTEBOOK.read_text())
    nb.setdefault('metadata', {}).pop('widgets', None)
    nb['cells'] = [c for c in nb['cells'] if _kept(c)]
    for c in nb['cells']:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
    with serve_lab(tmp_path_factory.mktemp('exlab'), nb, NOTEBOOK.name) as lab: yield lab


@pytest.fixture(scope='module')
def page(ex_lab, sync_playwright):
    "A Chromium page with the cut explorers notebook open and all its cells run."
    with open_notebook(sync_playwright, ex_lab, 1100, RUN_ALL_TIMEOUT) as pg: yield pg


def until(pg, fn, timeout_s=30, what='condition'):
    "Poll fn() until it is truthy; return its value."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        v = fn()
        if v: return v
        pg.wait_for_timeout(200)
    raise AssertionError(f'{what} not reached within {timeout_s} s')


def shot(pg, loc, name:str):
    "Screenshot of an element (scrolled into view) into tests/_screenshots/."
    loc.scroll_into_view_if_needed()
    pg.wait_for_timeout(300)
    loc.screenshot(path=str(SHOTS/f'{name}.png'))


def hyper(pg): return pg.locator('.convsvd-hypergraph-explorer').first


def test_explorers_render(page):
    "Run All draws both explorers without a traceback; the hypergraph explorer holds the interactive view."
    assert error_outputs(page) == [] and page.js_errors == []
    ex = hyper(page)
    ex.scroll_into_view_if_needed()
    view = ex.locator('.convsvd-hierarchy-view .convsvd-hyperview').first
    view.wait_for(state='visible', timeout=30_000)
    until(page, lambda: view.locator('.hv-hierarchy-svg .hv-node').count() >= 1, what='the hierarchy drawn')
    assert int(view.get_attribute('data-nodes')) == int(kernel_eval(page, 'print(len(hx.classes))'))
    assert view.get_attribute('data-selected') == kernel_eval(page, 'print(hx.eqclass.value)')
    assert ex.locator('.convsvd-error').first.inner_text().strip() == ''
    shot(page, ex, 'explorer_hypergraph_view')
    px = page.locator('.convsvd-profile-explorer').first
    px.scroll_into_view_if_needed()
    wait_text(px.locator('.convsvd-status').first, r'image=3 .*threshold=0\.30')
    assert img_src(px.locator('.convsvd-attribution-graph').first).startswith(('blob:', 'data:image/png'))
    shot(page, px, 'explorer_profile')


def test_click_in_hierarchy_picks_the_class(page):
    "A click on a box of the hierarchy at its drawn position picks that class in Python; the dropdown and class maps follow."
    ex = hyper(page)
    view = ex.locator('.convsvd-hierarchy-view .convsvd-hyperview').first
    view.scroll_into_view_if_needed()
    picked = kernel_eval(page, 'print(hx.eqclass.value)')
    boxes = view.locator('.hv-hierarchy-svg .hv-node')
    ids = [boxes.nth(i).get_attribute('data-id') for i in range(boxes.count())]
    label = next(i for i in reversed(ids) if i != picked)
    maps = ex.locator('.convsvd-class-maps').first
    before = img_src(maps)
    box = boxes.nth(ids.index(label)).bounding_box()
    page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    tip = view.locator('.hv-tip')
    until(page, lambda: tip.is_visible() and label in tip.inner_text(), what='the tooltip of the hovered class')
    until(page, lambda: tip.locator('img').count() >= 1, what='its exemplary images in the tooltip')
    shot(page, view, 'explorer_hierarchy_hover')
    page.mouse.click(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    until(page, lambda: kernel_eval(page, 'print(hx.eqclass.value, hx.view.selected, sep="|")') == f'{label}|{label}',
          what='the class picked in Python')
    wait_drawn(page, 'hx')
    until(page, lambda: img_src(maps) != before, what='the class maps redrawn')
    assert label in ex.locator('.convsvd-class-maps-note').first.inner_text()
    assert label in ex.locator('.convsvd-eqclass select option:checked').first.inner_text().replace('\xa0', ' ')
    assert view.locator(f'.hv-node.hv-sel[data-id="{label}"]').count() == 1
    wait_text(ex.locator('.convsvd-status').first, re.escape(f'picked={label}'))
    page.mouse.move(5, 5)
    shot(page, ex, 'explorer_hierarchy_clicked')


def test_dropdown_highlights_in_view(page):
    "A class picked in the dropdown is highlighted in the view (box and matrix row)."
    ex = hyper(page)
    view = ex.locator('.convsvd-hierarchy-view .convsvd-hyperview').first
    sel = ex.locator('.convsvd-eqclass select').first
    sel.scroll_into_view_if_needed()
    current = kernel_eval(page, 'print(hx.eqclass.value)')
    labels = json.loads(kernel_eval(page, 'import json; print(json.dumps([v for _, v in hx.eqclass.options]))'))
    other = next(v for v in labels if v != current)
    sel.select_option(index=labels.index(other))
    until(page, lambda: kernel_eval(page, 'print(hx.view.selected)') == other, what='the view selection set from the dropdown')
    until(page, lambda: view.locator(f'.hv-node.hv-sel[data-id="{other}"]').count() == 1, what='the box highlighted')
    assert view.locator('.hv-rowlabel.hv-sel').first.get_attribute('data-id') == other
    shot(page, ex, 'explorer_dropdown_highlight')


def test_q_step_updates_the_same_view(page):
    "A q step updates the view in place (same widget: its title names the new q), zoom still works."
    ex = hyper(page)
    view = ex.locator('.convsvd-hierarchy-view .convsvd-hyperview').first
    model_id = kernel_eval(page, 'print(hx.view.model_id)')
    handle = ex.locator('.convsvd-q .noUi-handle').first
    handle.scroll_into_view_if_needed(); handle.focus()
    for _ in range(3): handle.press('ArrowLeft')
    wait_text(ex.locator('.convsvd-status').first, r'q=0\.82', 60)
    wait_drawn(page, 'hx')
    until(page, lambda: 'q=0.82' in view.locator('.hv-title').inner_text(), what='the view retitled')
    assert kernel_eval(page, 'print(hx.view.model_id)') == model_id
    svg = view.locator('.hv-hierarchy-svg')
    s0 = float(svg.get_attribute('data-scale'))
    b = svg.bounding_box()
    page.mouse.move(b['x'] + b['width'] / 2, b['y'] + b['height'] / 3)
    for _ in range(3): page.mouse.wheel(0, -160); page.wait_for_timeout(120)
    until(page, lambda: float(svg.get_attribute('data-scale')) > s0 * 1.5, what='zoomed in')
    assert error_outputs(page) == []
    shot(page, ex, 'explorer_after_q_zoomed')


def test_profile_threshold_slider(page):
    "The ProfileExplorer's threshold slider redraws the attribution graph at the new threshold; 'class' draws the class's graph."
    px = page.locator('.convsvd-profile-explorer').first
    px.scroll_into_view_if_needed()
    graph = px.locator('.convsvd-attribution-graph').first
    before = img_src(graph)
    handle = px.locator('.convsvd-threshold .noUi-handle').first
    handle.focus()
    for _ in range(2): handle.press('ArrowRight')
    wait_text(px.locator('.convsvd-status').first, r'threshold=0\.40', 60)
    wait_drawn(page, 'px')
    until(page, lambda: img_src(graph) != before, what='the attribution graph redrawn')
    n = kernel_eval(page, 'print(px.graph().number_of_nodes(), pf.attribution_graph(model, test_data[3][0], threshold=0.4).number_of_nodes())')
    a, b = n.split(); assert a == b
    shot(page, px, 'explorer_profile_threshold')
    before = img_src(graph)
    px.locator('.convsvd-graph-of button', has_text='class').first.click()     # the mean graph of the image's class
    wait_text(px.locator('.convsvd-status').first, r'graph=class', 30)
    wait_drawn(page, 'px')
    until(page, lambda: img_src(graph) != before, what='the class graph drawn')
    assert 'images of class 5' in px.locator('.convsvd-attribution-graph-note').first.inner_text()
    assert error_outputs(page) == []
    shot(page, px, 'explorer_profile_class_graph')

"""Drive the hypergraph view (nbs/10_hyperview.ipynb) in a real JupyterLab with headless Chromium (pytest -m browser).

The server, Chromium and the waiting helpers are those of tests/test_browser.py (Debian's /usr/bin/chromium, never a
downloaded browser). A click on a box of the hierarchy at its drawn position must set `selected` in the kernel, a
value set in the kernel must highlight the box, the wheel must zoom with labels at a constant size; screenshots go
to tests/_screenshots/."""
import json
from pathlib import Path

import pytest

from test_browser import SHOTS, error_outputs, open_notebook, serve_lab, sync_playwright

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO/'nbs'/'10_hyperview.ipynb'
RUN_ALL_TIMEOUT = 300


@pytest.fixture(scope='module')
def hv_lab(tmp_path_factory, sync_playwright):
    "JupyterLab serving a copy of the hyperview notebook (no saved widget state: Run All replaces it anyway)."
    nb = json.loads(NOTEBOOK.read_text())
    nb.setdefault('metadata', {}).pop('widgets', None)
    with serve_lab(tmp_path_factory.mktemp('hvlab'), nb, NOTEBOOK.name) as lab: yield lab


@pytest.fixture(scope='module')
def page(hv_lab, sync_playwright):
    "A Chromium page with the hyperview notebook open and all its cells run."
    with open_notebook(sync_playwright, hv_lab, 1000, RUN_ALL_TIMEOUT) as pg: yield pg


KERNEL_EXEC = '''async (code) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, silent: false, store_history: false}); let out = '';
  f.onIOPub = (m) => { const t = m.header.msg_type;
    if (t === 'stream') out += m.content.text;
    if (t === 'error') out += 'ERROR ' + m.content.ename + ': ' + m.content.evalue; };
  await f.done; return out; }'''


def kernel(pg, code:str)->str:
    "Run `code` in the notebook's kernel; its printed output."
    return pg.evaluate(KERNEL_EXEC, code)


def until(pg, fn, timeout_ms=20_000, what='condition'):
    "Poll fn() until it is truthy."
    for _ in range(timeout_ms // 200):
        v = fn()
        if v: return v
        pg.wait_for_timeout(200)
    raise AssertionError(f'{what} not reached within {timeout_ms / 1000:.0f} s')


def digits_view(pg):
    "The root element of the view of fc1 on the digits (the notebook's view with exemplary images)."
    return pg.locator('.convsvd-hyperview', has=pg.locator('.hv-title', has_text='fc1 (95% quantile')).first


def shot(pg, loc, name:str):
    loc.scroll_into_view_if_needed()
    pg.wait_for_timeout(300)
    loc.screenshot(path=str(SHOTS/f'{name}.png'))


def test_views_render(page):
    "Run All draws every view without a traceback; the 1000-class view reports how long it took to draw."
    assert error_outputs(page) == [] and page.js_errors == []
    views = page.locator('.convsvd-hyperview')
    assert views.count() >= 4
    big = page.locator('.convsvd-hyperview', has=page.locator('.hv-title', has_text='1000 classes')).first
    big.scroll_into_view_if_needed()
    until(page, lambda: big.get_attribute('data-render-ms'), what='the 1000-class view drawn')
    assert big.get_attribute('data-columns') == '1000' and int(big.get_attribute('data-nodes')) >= 450
    print(f"1000-class view: {big.get_attribute('data-nodes')} equivalence classes drawn in "
          f"{big.get_attribute('data-first-render-ms')} ms (first render), {big.get_attribute('data-render-ms')} ms (data)")
    shot(page, big, 'hyperview_1000_classes')


def test_click_selects_in_python(page):
    "A click on a box at its drawn position sets `selected` in the kernel; hovering shows vectors, classes and images."
    v = digits_view(page)
    v.scroll_into_view_if_needed()
    shot(page, v, 'hyperview_digits')
    kernel(page, 'digits_view.selected = None')
    boxes = v.locator('.hv-hierarchy-svg .hv-node')
    target = boxes.nth(boxes.count() - 1)
    label = target.get_attribute('data-id')
    box = target.bounding_box()
    page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    tip = v.locator('.hv-tip')
    until(page, lambda: tip.is_visible() and label in tip.inner_text(), what='the tooltip')
    until(page, lambda: tip.locator('img').count() >= 3, what='the exemplary images in the tooltip')
    assert 'vectors' in tip.inner_text() and 'classes' in tip.inner_text()
    page.wait_for_timeout(300)
    v.screenshot(path=str(SHOTS/'hyperview_hover.png'))
    page.mouse.click(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    got = until(page, lambda: kernel(page, 'print(digits_view.selected)').strip() == label and label, what='selected in Python')
    assert kernel(page, 'print(digits_view.selected_vectors)').strip().startswith('[')
    assert v.locator(f'.hv-node.hv-sel[data-id="{got}"]').count() == 1
    assert v.get_attribute('data-selected') == label
    page.mouse.move(5, 5)
    shot(page, v, 'hyperview_clicked')


def test_python_selection_highlights(page):
    "Setting `selected` in the kernel highlights the box and the matrix row in the browser."
    v = digits_view(page)
    v.scroll_into_view_if_needed()
    first = v.locator('.hv-hierarchy-svg .hv-node').first.get_attribute('data-id')
    out = kernel(page, f'digits_view.selected = {first!r}')
    assert 'ERROR' not in out, out
    until(page, lambda: v.locator(f'.hv-node.hv-sel[data-id="{first}"]').count() == 1, what='the highlight')
    assert v.locator('.hv-rowlabel.hv-sel').first.get_attribute('data-id') == first
    assert v.locator('.hv-node.hv-sel').count() == 1
    shot(page, v, 'hyperview_selected_from_python')


def test_matrix_row_click(page):
    "A click on a row label of the matrix selects that equivalence class."
    v = digits_view(page)
    v.scroll_into_view_if_needed()
    row = v.locator('.hv-matrix-svg .hv-rowlabel[display="inline"]').nth(2)
    label = row.get_attribute('data-id')
    row.click()
    until(page, lambda: kernel(page, 'print(digits_view.selected)').strip() == label, what='selected from the matrix')


def test_zoom_keeps_labels_readable(page):
    "The wheel zooms the hierarchy around the pointer; the boxes' labels keep their size; a drag pans without selecting."
    v = digits_view(page)
    v.scroll_into_view_if_needed()
    svg = v.locator('.hv-hierarchy-svg')
    s0 = float(svg.get_attribute('data-scale'))
    label = v.locator('.hv-hierarchy-svg .hv-node text').first
    size0 = label.evaluate('e => getComputedStyle(e).fontSize')
    b = svg.bounding_box()
    page.mouse.move(b['x'] + b['width'] / 2, b['y'] + b['height'] / 3)
    for _ in range(3): page.mouse.wheel(0, -160); page.wait_for_timeout(120)
    until(page, lambda: float(svg.get_attribute('data-scale')) > s0 * 1.5, what='zoomed in')
    assert label.evaluate('e => getComputedStyle(e).fontSize') == size0
    shot(page, v, 'hyperview_zoomed')
    before = kernel(page, 'print(digits_view.selected)').strip()
    t0 = (svg.get_attribute('data-tx'), svg.get_attribute('data-ty'))
    page.mouse.move(b['x'] + 40, b['y'] + 40); page.mouse.down()
    page.mouse.move(b['x'] + 140, b['y'] + 90, steps=8); page.mouse.up()
    until(page, lambda: (svg.get_attribute('data-tx'), svg.get_attribute('data-ty')) != t0, what='panned')
    dx = float(svg.get_attribute('data-tx')) - float(t0[0])
    assert abs(dx - 100) < 2, dx                                          # the drawing follows the pointer
    assert kernel(page, 'print(digits_view.selected)').strip() == before
    v.locator('.hv-fit').click()
    until(page, lambda: abs(float(svg.get_attribute('data-scale')) - s0) < 1e-3, what='fit again')


def test_big_view_zoom_shows_more_labels(page):
    "Zoomed out, the 1000-class view thins its labels; zoomed in, more of them are drawn, all at the same size."
    big = page.locator('.convsvd-hyperview', has=page.locator('.hv-title', has_text='1000 classes')).first
    big.scroll_into_view_if_needed()
    shown = lambda: big.locator('.hv-matrix-svg .hv-collabel[display="inline"]').count()
    n0 = shown()
    m = big.locator('.hv-matrix-svg').bounding_box()
    page.mouse.move(m['x'] + m['width'] / 3, m['y'] + m['height'] / 3)
    for _ in range(8): page.mouse.wheel(0, -300); page.wait_for_timeout(100)
    until(page, lambda: big.locator('.hv-matrix-svg').get_attribute('data-scale') and
          float(big.locator('.hv-matrix-svg').get_attribute('data-scale')) > 3, what='the matrix zoomed in')
    page.wait_for_timeout(300)
    assert shown() != n0 or n0 > 0
    sizes = set(big.locator('.hv-matrix-svg .hv-collabel[display="inline"]').evaluate_all('es => es.map(e => getComputedStyle(e).fontSize)'))
    assert len(sizes) == 1
    big.screenshot(path=str(SHOTS/'hyperview_1000_zoomed.png'))
    ms = [float(big.locator(f'.{c}').get_attribute('data-place-ms')) for c in ('hv-matrix-svg', 'hv-hierarchy-svg')]
    print(f"1000-class view: one zoom step redraws the matrix in {ms[0]:.1f} ms and the hierarchy in {ms[1]:.1f} ms")

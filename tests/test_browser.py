"""Drive the explorers notebook in a real JupyterLab with headless Chromium (pytest -m browser).

JupyterLab is started on 127.0.0.1 with a random token and a free port, on a temporary copy of `nbs/`;
Playwright's Python package drives Debian's Chromium (`/usr/bin/chromium`; never `playwright install`).
The suite skips only when Chromium or playwright is absent."""
import contextlib, json, os, re, signal, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = os.environ.get('CONVSVD_BROWSER_NOTEBOOK', str(REPO/'nbs'/'11_explorers.ipynb'))
CHROMIUM = os.environ.get('CONVSVD_CHROMIUM', '/usr/bin/chromium')
SHOTS = REPO/'tests'/'_screenshots'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run']
RUN_ALL_TIMEOUT = 600  # seconds for Run All of the explorers notebook on a slow (or busy) CI machine

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _wait_http(url, proc, timeout=90):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'JupyterLab exited early with code {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.3)
    raise TimeoutError(f'JupyterLab did not answer {url} within {timeout} s')

@pytest.fixture(scope='module')
def sync_playwright():
    "Playwright's sync API, or a clean skip when the package or Chromium is missing."
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.skip('playwright is not installed (pip install playwright; it is in the dev extra)')
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f'Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)')
    return sync_playwright

@contextlib.contextmanager
def serve_lab(root:Path, nb:dict, name:str):
    "JupyterLab on 127.0.0.1 (random token, free port) serving notebook `nb` as root/nbs/`name`; killed with its kernels on exit."
    nbdir = root/'nbs'; nbdir.mkdir()
    # a kernelspec spares the kernel picker dialog (nbdev-clean may drop it from the saved notebook)
    nb.setdefault('metadata', {})['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    (nbdir/name).write_text(json.dumps(nb))
    token, port = uuid.uuid4().hex, _free_port()
    notif = root/'settings'/'@jupyterlab'/'apputils-extension'      # no "Jupyter news?" toast over the screenshots
    notif.mkdir(parents=True)
    (notif/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root/'cfg'), JUPYTER_RUNTIME_DIR=str(root/'rt'),
               JUPYTERLAB_WORKSPACES_DIR=str(root/'ws'), JUPYTERLAB_SETTINGS_DIR=str(root/'settings'),
               MPLBACKEND='module://matplotlib_inline.backend_inline',
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    env.pop('JUPYTER_TOKEN', None)
    cmd = [sys.executable, '-m', 'jupyterlab', '--allow-root', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
           f'--ServerApp.token={token}', '--ServerApp.password=', f'--ServerApp.root_dir={nbdir}',
           '--LabApp.expose_app_in_browser=True', f'--LabApp.workspaces_dir={root/"ws"}', '--ServerApp.port_retries=0']
    log = open(root/'lab.log', 'w')
    proc = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f'http://127.0.0.1:{port}/api/status?token={token}', proc)
        yield dict(url=f'http://127.0.0.1:{port}', token=token, notebook=name)
    finally:
        # the server and every kernel it started live in their own process group
        try: os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
        log.close()

@contextlib.contextmanager
def open_notebook(sync_playwright, lab:dict, height:int, run_all_timeout:int):
    "A Chromium page with the lab's notebook open and all its cells run; `page.js_errors` collects the page's errors."
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            pg = browser.new_page(viewport={'width': 1400, 'height': height})
            pg.js_errors = []
            pg.on('pageerror', lambda e: pg.js_errors.append(str(e)))
            pg.goto(f"{lab['url']}/lab/tree/{lab['notebook']}?token={lab['token']}&reset", wait_until='domcontentloaded')
            pg.wait_for_function('() => window.jupyterapp && window.jupyterapp.shell.currentWidget '
                                 '&& window.jupyterapp.shell.currentWidget.sessionContext', timeout=90_000)
            wait_kernel_idle(pg, 120)
            pg.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            wait_run_all(pg, run_all_timeout)
            yield pg
        finally:
            browser.close()

@pytest.fixture(scope='module')
def lab(tmp_path_factory, sync_playwright):
    "A JupyterLab server serving a temporary copy of the explorers notebook (its saved widget state kept)."
    with serve_lab(tmp_path_factory.mktemp('lab'), json.loads(Path(NOTEBOOK).read_text()), Path(NOTEBOOK).name) as lab: yield lab

@pytest.fixture(scope='module')
def page(lab, sync_playwright):
    "A Chromium page with the explorers notebook open, all cells run."
    with open_notebook(sync_playwright, lab, 1600, RUN_ALL_TIMEOUT) as pg: yield pg

# --- helpers ------------------------------------------------------------------------------------------------

KERNEL_STATUS = '''() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return k ? k.status : 'none'; }'''

def wait_kernel_idle(pg, timeout):
    "Wait until the notebook's kernel reports `idle`."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pg.evaluate(KERNEL_STATUS) == 'idle': return
        pg.wait_for_timeout(250)
    raise TimeoutError(f'kernel not idle after {timeout} s (status {pg.evaluate(KERNEL_STATUS)!r})')

CELLS_STATE = '''() => { const nb = window.jupyterapp.shell.currentWidget.content;
  const cells = nb.widgets.filter(c => c.model.type === 'code');
  return {n: cells.length, pending: cells.filter(c => c.promptNode && c.promptNode.textContent.includes('*')).length,
          unrun: cells.filter(c => c.model.executionCount === null).length}; }'''

def wait_run_all(pg, timeout):
    "Wait until every code cell has run (execution count set, no `[*]`) and the kernel is idle."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = pg.evaluate(CELLS_STATE)
        if st['pending'] == 0 and st['unrun'] == 0 and pg.evaluate(KERNEL_STATUS) == 'idle': return st
        pg.wait_for_timeout(500)
    raise TimeoutError(f'Run All not finished after {timeout} s: {pg.evaluate(CELLS_STATE)}')

def error_outputs(pg):
    "Texts of the error outputs (tracebacks) in the notebook."
    return pg.evaluate('''() => Array.from(window.jupyterapp.shell.currentWidget.content.widgets)
      .flatMap(c => c.model.type === 'code' ? Array.from({length: c.model.outputs.length}, (_, i) => c.model.outputs.get(i)) : [])
      .filter(o => o.type === 'error').map(o => o.toJSON().ename + ': ' + o.toJSON().evalue)''')

def wait_text(loc, pattern, timeout=60):
    "Wait until the locator's text matches `pattern` (a regex); return the text."
    t0, txt = time.monotonic(), None
    while time.monotonic() - t0 < timeout:
        txt = loc.inner_text()
        if re.search(pattern, txt): return txt
        time.sleep(0.2)
    raise AssertionError(f'text {txt!r} never matched {pattern!r} within {timeout} s')

KERNEL_EVAL = '''async (code) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code: code, silent: false, store_history: false}); let out = '';
  f.onIOPub = m => { if (m.header.msg_type === 'stream') out += m.content.text;
                     if (m.header.msg_type === 'error') out += 'ERROR ' + m.content.ename + ': ' + m.content.evalue; };
  await f.done; return out; }'''

def kernel_eval(pg, code):
    "Run `code` in the notebook's kernel (after what is queued there) and return what it printed."
    out = pg.evaluate(KERNEL_EVAL, code)
    assert not out.startswith('ERROR'), out
    return out.strip()

def wait_drawn(pg, name, timeout=120):
    "Wait until the explorer `name` in the kernel has no redraw waiting (debounced or deferred)."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if kernel_eval(pg, f'print(bool({name}._pending))') == 'False': return
        pg.wait_for_timeout(250)
    raise TimeoutError(f'{name} still has redraws waiting after {timeout} s')

def img_src(loc): return loc.evaluate('e => (e.tagName === "IMG" ? e : e.querySelector("img")).src')

def shot(pg, loc, name):
    "Screenshot of the page with the top of `loc` (an explorer) scrolled to the top, into tests/_screenshots/."
    path = SHOTS/f'{name}.png'
    loc.evaluate('e => e.scrollIntoView({block: "start"})')
    pg.wait_for_timeout(300)
    pg.screenshot(path=str(path))
    return path

# --- tests --------------------------------------------------------------------------------------------------

def test_run_all_no_errors(page):
    "Run All executes the explorers notebook without a traceback and renders every explorer."
    assert error_outputs(page) == []
    for kind in ['layer', 'esd', 'hypergraph', 'featurevis', 'influence', 'profile']:
        root = page.locator(f'.convsvd-{kind}-explorer').first
        root.wait_for(state='attached', timeout=30_000)
        assert root.locator('.convsvd-error').first.inner_text().strip() == '', kind
    # no warning or traceback text inside any explorer (Output widgets would show it as a stderr output)
    assert page.locator('.convsvd-explorer .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
    # the explorers the reader sees keep the settings they were shown with: the test cells use second instances
    for kind, pattern in [('layer', r'layer=conv2 · image=3 '), ('hypergraph', r'layer=conv2 · q=0\.85 · p=75')]:
        root = page.locator(f'.convsvd-{kind}-explorer').first
        root.scroll_into_view_if_needed()
        wait_text(root.locator('.convsvd-status').first, pattern, 30)
    page.screenshot(path=str(SHOTS/'notebook_after_run_all.png'))

def test_hypergraph_q_slider_redraws(page):
    "Moving the HypergraphExplorer's q slider recomputes the hypergraph at the new q and updates its view (debounced)."
    ex = page.locator('.convsvd-hypergraph-explorer').first
    ex.scroll_into_view_if_needed()
    status, view = ex.locator('.convsvd-status').first, ex.locator('.convsvd-hierarchy-view .convsvd-hyperview').first
    before_txt = wait_text(status, r'q=0\.\d+')
    q0 = float(re.search(r'q=(0\.\d+)', before_txt).group(1))
    assert f'q={q0:.2f}' in view.locator('.hv-title').inner_text()
    shot(page, ex, 'hypergraph_before')
    handle = ex.locator('.convsvd-q .noUi-handle').first
    handle.focus()
    n0 = int(kernel_eval(page, "print(hx.draws['hypergraph'])"))
    for _ in range(5): handle.press('ArrowLeft')  # 5 steps down: a lower threshold, more vertices per edge
    readout = ex.locator('.convsvd-q .widget-readout').first
    q1 = float(wait_text(readout, r'\d', 10))
    assert q1 < q0
    wait_text(status, rf'q={q1:.2f}', 90)
    wait_drawn(page, 'hx')
    n1 = int(kernel_eval(page, "print(hx.draws['hypergraph'])"))
    assert 1 <= n1 - n0 < 5, (n0, n1)             # debounced: five steps, fewer redraws
    print('hypergraph redraw seconds:', kernel_eval(page, "print({k: round(v, 3) for k, v in hx.seconds.items()})"))
    wait_text(view.locator('.hv-title'), rf'q={q1:.2f}', 30)   # the same view, updated in place
    assert view.get_attribute('data-nodes') == kernel_eval(page, 'print(len(hx.classes))')
    assert error_outputs(page) == []
    shot(page, ex, 'hypergraph_after_q')

def test_layer_explorer_layer_redraws(page):
    "Picking another layer in the LayerExplorer redraws figure 5 and the signal maps for that layer."
    ex = page.locator('.convsvd-layer-explorer').first
    ex.scroll_into_view_if_needed()
    status = ex.locator('.convsvd-status').first
    sel = ex.locator('.convsvd-layer select').first
    options = [o.strip() for o in sel.locator('option').evaluate_all('os => os.map(o => o.textContent)')]
    current = wait_text(status, r'layer=\w+').split('layer=')[1].split()[0]
    assert current in options, (current, options)
    images = {c: img_src(ex.locator(f'.{c}').first) for c in ['convsvd-figure5', 'convsvd-signal-maps']}
    shot(page, ex, 'layer_before')
    vectors = wait_text(status, r'vectors=[\d,]+').split('vectors=')[1].split()[0]
    new = next(o for o in options if o != current)   # another convolution first if there is one
    sel.select_option(index=options.index(new))
    wait_text(status, re.escape(f'layer={new}') + r'\b', 90)
    wait_drawn(page, 'lx')
    assert f'vectors={vectors}' in status.inner_text()   # the picked vectors exist in the new layer: kept
    for c, src in images.items():
        assert img_src(ex.locator(f'.{c}').first) != src, c
    assert error_outputs(page) == []
    shot(page, ex, 'layer_after_layer')

def test_featurevis_render_button(page):
    "Switching the FeatureVisExplorer to a weighted sum and pressing Render optimises a new image and draws it."
    ex = page.locator('.convsvd-featurevis-explorer').first
    ex.scroll_into_view_if_needed()
    status = ex.locator('.convsvd-status').first
    plot = ex.locator('.convsvd-featurevis-plot').first
    wait_text(status, r'image=rendered')
    weights = ex.locator('.convsvd-weights input').first
    assert weights.is_disabled()                       # each vector: no weights to type
    assert not ex.locator('.convsvd-exemplars').first.is_visible()   # the exemplary images sit beside the rendering
    ex.locator('.convsvd-mode button', has_text='weighted sum').first.click()
    page.wait_for_function('e => !e.disabled', arg=weights.element_handle(), timeout=30_000)
    weights.fill('1, -1, 0.5'); weights.press('Enter')
    wait_text(status, r'weights=1, -1, 0\.5 .*image=press Render', 30)
    ex.locator('.convsvd-exemplars').first.wait_for(state='visible', timeout=30_000)   # exemplary images alone until rendered
    shot(page, ex, 'featurevis_weighted_before_render')
    before = img_src(plot)
    ex.locator('.convsvd-render').first.click()
    wait_text(status, r'weights=1, -1, 0\.5 .*image=rendered', 120)
    wait_kernel_idle(page, 60)
    assert img_src(plot) != before and error_outputs(page) == []
    assert not ex.locator('.convsvd-exemplars').first.is_visible()   # drawn once: beside the rendering now
    assert ex.locator('.convsvd-error').first.inner_text().strip() == ''
    shot(page, ex, 'featurevis_after_render')

"""The documentation site works offline: pages opened from disk in headless Chromium with every request to another
host blocked still draw their saved widgets and their equations."""
import os, re, shutil
from pathlib import Path

import pytest

from convsvd.docs import build_docs, project_nbs

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get('CONVSVD_CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--allow-file-access-from-files']
SHOTS = Path(__file__).resolve().parents[1]/'tests'/'_screenshots'


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site of three notebooks: the index, one with equations and the explorers (saved widget state)."
    root = tmp_path_factory.mktemp('docs')
    nbs = root/'nbs'; nbs.mkdir()
    for name in ('index.ipynb', '01_matrization.ipynb', '11_explorers.ipynb'): shutil.copy(project_nbs()/name, nbs/name)
    if (project_nbs()/'images').is_dir(): shutil.copytree(project_nbs()/'images', nbs/'images')
    return build_docs(root/'site', nbs=nbs, progress=False)


@pytest.fixture(scope='module')
def browser(site):
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.skip('playwright is not installed (it is in the dev extra)')
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)): pytest.skip(f'Chromium not found at {CHROMIUM}')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def offline_page(browser, path:Path):
    "A page opened from disk with every request that leaves the disk aborted; returns (page, blocked URLs)."
    pg, blocked = browser.new_page(viewport={'width': 1300, 'height': 900}), []
    def route(r):
        if r.request.url.startswith(('file://', 'data:')): r.continue_()
        else: blocked.append(r.request.url); r.abort()
    pg.route('**/*', route)
    pg.goto(path.as_uri())
    return pg, blocked


def test_pages_name_no_other_host(site):
    for page in site.glob('*.html'):
        text = page.read_text()
        assert re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"', text) == [], page.name
        assert '#| export' not in text and 'In&nbsp;[' not in text, page.name


def test_equations_render_offline(site, browser):
    pg, blocked = offline_page(browser, site/'01_matrization.html')
    pg.wait_for_selector('.MathJax_CHTML', timeout=60_000)
    assert pg.locator('.MathJax_CHTML').count() > 10
    assert 'Math Processing Error' not in pg.inner_text('body')
    SHOTS.mkdir(exist_ok=True); pg.screenshot(path=str(SHOTS/'docs_equations_offline.png'))
    assert blocked == []


def test_widgets_render_offline(site, browser):
    pg, blocked = offline_page(browser, site/'11_explorers.html')
    pg.wait_for_selector('.widget-dropdown, .jupyter-widgets.widget-dropdown', timeout=60_000)
    assert pg.locator('.convsvd-controls').count() > 0                     # the explorers' own control rows
    assert pg.locator('.widget-dropdown select').count() > 0
    SHOTS.mkdir(exist_ok=True); pg.screenshot(path=str(SHOTS/'docs_widgets_offline.png'))
    assert blocked == []

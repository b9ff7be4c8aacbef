"The notebooks are the source: they must be clean, exported, in sync with README.md, and they must run."
import configparser, hashlib, subprocess, sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
BIN = Path(sys.executable).parent


def run(*cmd, timeout=1800):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def tracked_state():
    "Hash of every tracked file under nbs/ and convsvd/, plus the untracked files nbdev could create there."
    files = run('git', 'ls-files', 'nbs', 'convsvd').stdout.split()
    untracked = run('git', 'ls-files', '--others', '--exclude-standard', 'nbs', 'convsvd').stdout.split()
    return {f: hashlib.sha1((ROOT/f).read_bytes()).hexdigest() if (ROOT/f).exists() else None for f in files}, set(untracked)


@pytest.mark.skipif(not (ROOT/'.git').exists(), reason='needs a git checkout')
def test_notebooks_clean_and_exported():
    before, new_before = tracked_state()
    for cmd in ('nbdev-clean', 'nbdev-export'):
        r = run(str(BIN/cmd))
        assert r.returncode == 0, r.stderr
    after, new_after = tracked_state()
    changed = sorted(f for f in before if before[f] != after[f]) + sorted(new_after - new_before)
    assert not changed, f'nbdev-clean/nbdev-export changed {changed}: run them and commit the result'


def test_readme_in_sync():
    r = run(sys.executable, '.ci/readme.py', '--check')
    assert r.returncode == 0, r.stderr + r.stdout


def test_single_version():
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    assert version('convsvd') == cfg['DEFAULT']['version']


def test_there_are_notebooks():
    assert 'index.ipynb' in NOTEBOOKS and sum(n[:2].isdigit() for n in NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb):
    "nbdev-test runs every cell not flagged slow; it must find the notebook and succeed."
    r = run(str(BIN/'nbdev-test'), f'nbs/{nb}')
    assert r.returncode == 0 and 'Success.' in r.stdout, f'{nb} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}'

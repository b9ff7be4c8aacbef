"""A built wheel, installed outside the checkout, carries the default model's weights and runs `convsvd report`."""
import os, subprocess, sys, zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(out), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob('convsvd-*.whl')
    return whl


def test_wheel_ships_the_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert 'convsvd/assets/digits_cnn.pt' in names
    assert {f'convsvd/{m}.py' for m in ('core', 'matrization', 'signals', 'report', 'cli', 'docs')} <= set(names)


def test_installed_wheel_runs_a_report(wheel, tmp_path):
    site = tmp_path/'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(site), MPLBACKEND='Agg')            # the installed copy, not the checkout
    work = tmp_path/'elsewhere'; work.mkdir()
    where = subprocess.run([sys.executable, '-c', 'import convsvd, pathlib; print(pathlib.Path(convsvd.__file__).parent)'],
                           cwd=work, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()) == site/'convsvd', where
    p = subprocess.run([sys.executable, '-m', 'convsvd', 'report', '--quick', '--quiet', '--max-images', '60', '--out', 'r.html'],
                       cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'content="complete"' in (work/'r.html').read_text()

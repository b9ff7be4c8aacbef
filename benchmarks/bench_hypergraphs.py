"""Benchmark of convsvd.hypergraphs and convsvd.hyperview at a 1000-class scale (synthetic signals, planted structure).

1. `hypergraph_family` over a 10 x 5 grid of (q, p) for 1000 classes x 512 singular vectors x 50 images per class,
   side by side with the direct way (per (q, p): threshold, pandas groupby of the flags, one HyperNetX hypergraph).
2. `hypergraph_family` for 1000 classes x 512 vectors x 200 images per class (410 MB of float32 signals) on an
   in-memory SignalSet and, where `SignalSet.open` exists, on a signal store written by `collect_signals(store=...)`
   with the same values: time and peak memory, each in a fresh process, and the two families compared.
3. The hypergraph view at q=0.9, p=75 (about 500 equivalence classes, 1000 hyperedges): Python time to build the
   widget's data and to update it for a new q, and the bytes sent (initial state against the update).

Run: python benchmarks/bench_hypergraphs.py [--repeats 3] [--direct-points 50] [--skip-direct] [--skip-store]
(BENCH_CLASSES=50 in the environment for a quick try at 50 classes)
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, time, tracemalloc

import numpy as np
import pandas as pd

from convsvd.signals import SignalSet
from convsvd.hypergraphs import hypergraph_family, to_hypergraph, semantic_hierarchy

N_CLASSES, R = int(os.environ.get('BENCH_CLASSES', 1000)), 512   # BENCH_CLASSES=50 for a quick try
QS = np.round(np.linspace(0.5, 0.95, 10), 3)
PS = [50., 60., 75., 90., 100.]


def planted(per_class:int, seed:int=0)->tuple:
    "(signals, labels): 4 vectors raised for all classes, 4 per super-class of about 60 classes, 8 per class."
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), per_class)
    up = np.zeros((N_CLASSES, R), np.float32)
    up[:, :4] = 2.5
    supers = rng.integers(0, 16, N_CLASSES)
    for g in range(16): up[np.ix_(supers == g, 4 + 4 * g + np.arange(4))] = 2.0
    for c in range(N_CLASSES): up[c, rng.choice(np.arange(68, R), 8, replace=False)] += 2.0
    perm = rng.permutation(len(labels))                       # images in no particular order, as in ImageNet's val set
    a = rng.standard_normal((len(labels), R), dtype=np.float32)
    a += up[labels]
    return a[perm], labels[perm]


def direct(ss, layer, qs, ps, points):
    "The straightforward way: per (q, p) threshold, groupby-mean the flags, build a HyperNetX hypergraph."
    a = ss[layer]
    mats, hs = {}, 0
    t0 = time.perf_counter()
    for q in qs:
        thr = np.quantile(a, q)
        frac = pd.DataFrame(a > thr).groupby(ss.labels).mean().to_numpy()
        for p in ps: mats[(q, p)] = frac * 100 >= p - 1e-9
    t_inc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for (q, p) in list(mats)[:points]:
        to_hypergraph(pd.DataFrame(mats[(q, p)], index=ss.classes, columns=[f'v{i}' for i in range(a.shape[1])])); hs += 1
    return mats, t_inc, (time.perf_counter() - t0) * len(mats) / max(hs, 1), hs


def part1(args):
    a, labels = planted(50)
    ss = SignalSet({'layer': a}, labels)
    print(f"1. {N_CLASSES} classes x {R} vectors x 50 images, grid {len(QS)} q x {len(PS)} p")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter(); fam = hypergraph_family(ss, 'layer', QS, PS); times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"   hypergraph_family (50 incidence matrices + summary): best {best:.2f} s, median {statistics.median(times):.2f} s "
          f"of {args.repeats} -> {'under' if best < 2 else 'OVER'} the 2 s target")
    t0 = time.perf_counter(); H = fam.hypergraph(q=0.9, p=75); t_one = time.perf_counter() - t0
    t0 = time.perf_counter(); G = semantic_hierarchy(H); t_hier = time.perf_counter() - t0
    print(f"   on request: one HyperNetX hypergraph (q=0.9, p=75: {len(H.nodes)} nodes, {len(H.edges)} edges) {t_one:.2f} s; "
          f"its semantic hierarchy ({len(G)} classes, {G.number_of_edges()} Hasse edges) {t_hier:.2f} s")
    if args.skip_direct: return fam
    mats, t_inc, t_hnx, built = direct(ss, 'layer', QS, PS, args.direct_points)
    agree = all(np.array_equal(fam.matrix(q=q, p=p), m) for (q, p), m in mats.items())
    print(f"   direct way: incidence matrices {t_inc:.2f} s (same as the family: {agree}); 50 HyperNetX objects {t_hnx:.2f} s "
          f"({'measured' if built == 50 else f'{built} built, extrapolated'}); ratio direct / family {(t_inc + t_hnx) / best:.1f}x "
          f"(incidence only {t_inc / best:.1f}x)")
    if not agree: raise SystemExit("the family's incidence matrices differ from the direct computation")
    return fam


def child(kind:str, path:str):
    "In a fresh process: the family at 200 images per class, in memory or on the store at `path`; prints JSON."
    t0 = time.perf_counter()
    if kind == 'memory':
        a, labels = planted(200)
        ss = SignalSet({'layer': a}, labels)
    else:
        ss = SignalSet.open(path)
        if kind == 'store-in-memory': ss = SignalSet({k: ss[k] for k in ss.layers}, ss.labels, classes=ss.classes)
    t_load = time.perf_counter() - t0
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    fam = hypergraph_family(ss, ss.layers[0], QS, PS)
    t = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = dict(kind=kind, seconds=t, load_seconds=t_load, traced_peak_mb=peak / 2**20, rss_before_mb=base / 1024,
               rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, summary=fam.summary.to_json())
    if path and kind != 'memory': np.save(os.path.join(path + '.out', f'{kind}.npy'), fam.matrix(q=0.9, p=75))
    print(json.dumps(out))


def run_child(kind:str, path:str=''):
    r = subprocess.run([sys.executable, __file__, '--_child', kind, '--_path', path], capture_output=True, text=True)
    if r.returncode: raise SystemExit(f"child {kind} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_store(path:str):
    "A signal store of the 200-per-class values: a Linear layer with a positive diagonal weight passes them through."
    import torch
    from torch import nn
    from convsvd.signals import collect_signals
    a, labels = planted(200)
    lin = nn.Linear(R, R, bias=False)
    with torch.no_grad(): lin.weight.copy_(torch.diag(torch.linspace(2.0, 1.0, R)))
    data = torch.utils.data.TensorDataset(torch.from_numpy(a), torch.from_numpy(labels))
    t0 = time.perf_counter()
    collect_signals(nn.Sequential(lin), data, batch_size=4096, progress=False, store=path)
    return time.perf_counter() - t0


def part2(args):
    print(f"2. hypergraph_family, {N_CLASSES} classes x {R} vectors x 200 images ({N_CLASSES * 200 * R * 4 / 2**20:.0f} MB of "
          f"signals), grid {len(QS)} x {len(PS)}, each in a fresh process")
    m = run_child('memory')
    print(f"   in memory: {m['seconds']:.2f} s; peak traced allocations during the call {m['traced_peak_mb']:.0f} MB; "
          f"process peak RSS {m['rss_peak_mb']:.0f} MB (of which {m['rss_before_mb']:.0f} MB before the call)")
    if args.skip_store or not hasattr(SignalSet, 'open'):
        print("   store: skipped (" + ("--skip-store" if args.skip_store else "this convsvd has no SignalSet.open") + ")")
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = os.path.join(tmp, 'store'); os.makedirs(path + '.out')
        t_write = write_store(path)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        s = run_child('store', path)
        c = run_child('store-in-memory', path)
        same = s['summary'] == c['summary'] and np.array_equal(np.load(path + '.out/store.npy'), np.load(path + '.out/store-in-memory.npy'))
    print(f"   store written by collect_signals in {t_write:.1f} s ({size / 2**20:.0f} MB on disk)")
    print(f"   on the store (SignalSet.open): {s['seconds']:.2f} s; traced peak {s['traced_peak_mb']:.0f} MB; process peak RSS "
          f"{s['rss_peak_mb']:.0f} MB ({s['rss_before_mb']:.0f} MB before the call)")
    print(f"   the same values read into memory: {c['seconds']:.2f} s; traced peak {c['traced_peak_mb']:.0f} MB; process peak RSS "
          f"{c['rss_peak_mb']:.0f} MB ({c['rss_before_mb']:.0f} MB before the call); families equal: {same}")
    print(f"   ratio store / memory: time {s['seconds'] / c['seconds']:.2f}x, process peak {s['rss_peak_mb'] / c['rss_peak_mb']:.2f}x")
    if not same: raise SystemExit("the family on the store differs from the in-memory family")


def part3(fam):
    from convsvd.hyperview import HyperView
    print("3. the hypergraph view of the 50-per-class family")
    sent = []
    t0 = time.perf_counter(); inc = fam.incidence(q=0.9, p=75); view = HyperView(inc); t_new = time.perf_counter() - t0
    view.comm.send = lambda data=None, buffers=None, **kw: sent.append(data)
    state = {k: getattr(view, k) for k in ('classes', 'columns', 'nodes', 'links', 'title')}
    t0 = time.perf_counter(); view.show(fam.incidence(q=0.85, p=75)); t_upd = time.perf_counter() - t0
    print(f"   q=0.9, p=75: {len(view.nodes)} equivalence classes after the update, {len(view.columns)} hyperedges")
    print(f"   Python: incidence + view data + widget {t_new:.2f} s; update to q=0.85 {t_upd:.2f} s")
    print(f"   bytes: initial state {len(json.dumps(state)) / 1e3:.0f} kB (class names {len(json.dumps(view.classes)) / 1e3:.0f} kB); "
          f"the update sends {len(json.dumps(sent)) / 1e3:.0f} kB in {len(sent)} message(s), keys "
          f"{sorted(sent[0]['state']) if sent else []}; images are sent only when the browser asks")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--direct-points', type=int, default=50, help='HyperNetX objects built in the direct way (extrapolated to 50)')
    ap.add_argument('--skip-direct', action='store_true')
    ap.add_argument('--skip-store', action='store_true')
    ap.add_argument('--tmp', default=None, help='where the temporary store goes (default: the system temp folder)')
    ap.add_argument('--_child', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--_path', default='', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child: return child(args._child, args._path)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    fam = part1(args)
    part2(args)
    part3(fam)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == '__main__':
    main()

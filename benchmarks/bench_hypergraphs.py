"""Benchmark: a family of hypergraphs over a 10 x 5 grid of (q, p) for 1000 classes x 512 singular vectors x
50 images per class (synthetic SignalSet with a planted class structure), as `convsvd.hypergraphs.hypergraph_family`
computes it (incidence matrices + summary, no HyperNetX objects), side by side with the direct way: per (q, p)
threshold, per-class pandas groupby of the significance flags, and one HyperNetX Hypergraph per grid point.

Run: python benchmarks/bench_hypergraphs.py [--repeats 3] [--direct-points 50]
"""
import argparse, os, platform, statistics, time

import numpy as np
import pandas as pd

from convsvd.signals import SignalSet
from convsvd.hypergraphs import hypergraph_family, to_hypergraph, semantic_hierarchy, equivalence_classes

N_CLASSES, R, PER_CLASS = 1000, 512, 50
QS = np.round(np.linspace(0.5, 0.95, 10), 3)
PS = [50., 60., 75., 90., 100.]


def synthetic(seed=0) -> SignalSet:
    "Signals with structure: 4 vectors raised for all classes, 64 for one of 16 super-classes, 8 per class."
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    up = np.zeros((N_CLASSES, R), np.float32)
    up[:, :4] = 2.5
    supers = rng.integers(0, 16, N_CLASSES)
    for g in range(16): up[np.ix_(supers == g, 4 + 4 * g + np.arange(4))] = 2.0
    for c in range(N_CLASSES): up[c, rng.choice(np.arange(68, R), 8, replace=False)] += 2.0
    a = rng.standard_normal((len(labels), R), dtype=np.float32) + up[labels]
    perm = rng.permutation(len(labels))                       # images in no particular order
    return SignalSet({'layer': a[perm]}, labels[perm])


def direct(ss, layer, qs, ps, points):
    "The straightforward way: per (q, p) threshold, groupby-mean the flags, build a HyperNetX hypergraph."
    a = ss[layer]
    mats, hs = {}, 0
    t0 = time.perf_counter()
    for q in qs:
        thr = np.quantile(a, q)
        frac = pd.DataFrame(a > thr).groupby(ss.labels).mean().to_numpy()
        for p in ps:
            mats[(q, p)] = frac * 100 >= p - 1e-9
    t_inc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for (q, p) in list(mats)[:points]:
        inc = pd.DataFrame(mats[(q, p)], index=ss.classes, columns=[f'v{i}' for i in range(a.shape[1])])
        to_hypergraph(inc); hs += 1
    t_hnx = (time.perf_counter() - t0) * len(mats) / max(hs, 1)
    return mats, t_inc, t_hnx, hs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--direct-points', type=int, default=50, help='HyperNetX objects to build in the direct way '
                    '(the time is extrapolated to all 50 when fewer)')
    args = ap.parse_args()
    ss = synthetic()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{N_CLASSES} classes x {R} vectors x {PER_CLASS} images, grid {len(QS)} q x {len(PS)} p")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fam = hypergraph_family(ss, 'layer', QS, PS)
        times.append(time.perf_counter() - t0)
    best, med = min(times), statistics.median(times)
    print(f"hypergraph_family (incidence + summary of all 50): best {best:.2f} s, median {med:.2f} s "
          f"over {args.repeats} runs -> {'under' if best < 2 else 'OVER'} the 2 s target")
    s = fam.summary
    print(f"  summary ranges: nodes {s.nodes.min()}-{s.nodes.max()}, edges {s.edges.min()}-{s.edges.max()}, "
          f"equivalence classes {s.equivalence_classes.min()}-{s.equivalence_classes.max()}, depth {s.depth.min()}-{s.depth.max()}")
    t0 = time.perf_counter()
    H = fam.hypergraph(0.9, 75)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    G = semantic_hierarchy(H)
    t_hier = time.perf_counter() - t0
    print(f"  lazily built on request: one HyperNetX hypergraph (q=0.9, p=75: {len(H.nodes)} nodes, {len(H.edges)} edges) "
          f"{t_one:.2f} s; its semantic hierarchy ({len(G)} classes, {G.number_of_edges()} Hasse edges) {t_hier:.2f} s")
    mats, t_inc, t_hnx, built = direct(ss, 'layer', QS, PS, args.direct_points)
    agree = all(np.array_equal(fam.matrix(q, p), m) for (q, p), m in mats.items())
    print(f"direct way: incidence matrices {t_inc:.2f} s (agree with the family: {agree}); "
          f"50 HyperNetX objects {t_hnx:.2f} s ({'measured' if built == 50 else f'{built} built, extrapolated'}); "
          f"total {t_inc + t_hnx:.2f} s")
    print(f"ratio direct / family: {(t_inc + t_hnx) / best:.1f}x (incidence only: {t_inc / best:.1f}x)")
    if not agree: raise SystemExit("the family's incidence matrices differ from the direct computation")


if __name__ == '__main__':
    main()

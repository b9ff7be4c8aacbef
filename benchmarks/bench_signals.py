"""Signal vectors of every linear layer over a dataset: convsvd.collect_signals vs a plain forward pass vs DeepDataProfiler.

Workloads (side by side, interleaved, in one process per workload):
  * the embedded default model (the paper's N) over the 540 real digits of the test split, batches of 64;
  * torchvision VGG16 (random weights) on 224x224 inputs, a few batches of 8.
Methods:
  * plain   -- `with torch.inference_mode(): model(x)` over the same pre-built batches (the reference);
  * convsvd -- `collect_signals(model, batches)` over all linear layers (SVDs computed once before the timed passes);
  * ddp     -- DeepDataProfiler 2.0.1 `SVDProfiler(model).create_influential(x)` (its signal vectors, aggregation='sum',
               i.e. the mean over positions), one image at a time: the only batch size it supports.
Time: each repetition runs plain, convsvd and ddp back to back; the ratio is the median over repetitions of
  method / plain within a repetition (paired, which cancels slow drifts of a shared machine), with the ratio of best times.
Memory: peak resident set size (Linux VmHWM) during each pass, measured in-process: before each pass, free memory is
  returned to the OS (malloc_trim) and the high-water mark is reset (writing 5 to /proc/self/clear_refs); the pass's
  increment is VmHWM - VmRSS at the reset. What each method keeps resident across passes (the SVDs) is reported
  separately. Allocations of 128 KiB and more are served by mmap (mallopt M_MMAP_THRESHOLD, fixed for the whole run) so
  that freed tensors leave the RSS immediately instead of fragmenting the heap. For the digits model the script also
  runs each method in a fresh subprocess and reports its VmHWM (absolute peak of the whole process: imports, model,
  data, one pass; resource.getrusage's ru_maxrss is not used because Linux carries the parent's peak across exec),
  and for VGG16 the plain pass's whole-process peak, with convsvd's estimated from it plus its resident SVD cache.
Threads: --threads 1 by default: on the shared 2-core machine two OpenMP threads compete with other jobs and spin,
  which makes timings erratic (and LAPACK's SVD many times slower). Importing deep_data_profiler seeds torch and
  silences warnings globally; it is imported only after convsvd's passes are set up.
VGG16 whole-process peaks (--vgg-peak-only, also part of the full run): a plain pass and a collect_signals run, each in a
  fresh process; the signals process reports the peak of each phase (setup, the SVDs it computes first, the pass).
Usage: python benchmarks/bench_signals.py [--threads 1] [--reps 5] [--vgg-batches 3] [--skip-vgg] [--skip-ddp] [--vgg-peak-only]
"""
import argparse, copy, ctypes, gc, json, os, subprocess, sys, time
from collections import namedtuple

import numpy as np
import torch


def fixed_mmap_threshold():
    "Serve every allocation >= 128 KiB by mmap (glibc mallopt M_MMAP_THRESHOLD), so freed tensors leave the RSS at once."
    try: ctypes.CDLL('libc.so.6').mallopt(-3, 128 * 1024)
    except (OSError, AttributeError): pass


def status():
    d = {}
    for line in open('/proc/self/status'):
        if line.startswith(('VmRSS', 'VmHWM')): d[line.split(':')[0]] = int(line.split()[1]) * 1024
    return d


def reset_peak():
    gc.collect()
    try: ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError: pass
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')
    return status()['VmRSS']


def measured(fn):
    "Run fn once: (seconds, resident bytes before, peak resident bytes during)."
    base = reset_peak()
    t = time.perf_counter(); fn(); dt = time.perf_counter() - t
    return dt, base, status()['VmHWM']


def tensor_bytes(*ts): return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))


def digits_workload():
    from convsvd.models import default_model, digits_dataset
    test = digits_dataset(train=False)
    batches = [(test.data[i:i + 64], test.targets[i:i + 64]) for i in range(0, len(test), 64)]
    return 'default model, 540 digits (28x28), batch 64', default_model(), batches


def vgg_workload(n_batches, bs=8):
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()        # random weights: timing only
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(bs, 3, 224, 224, generator=g), torch.randint(0, 1000, (bs,), generator=g)) for _ in range(n_batches)]
    return f'VGG16 (random weights), {n_batches} batches of {bs} at 224x224', model, batches


def plain_pass(model, batches):
    with torch.inference_mode():
        for xb, _ in batches: model(xb)


def make_ddp(model, svds=None):
    "DDP's SVD profiler on a copy of the model (its hooks are never removed); optionally reuse precomputed U."
    import deep_data_profiler as ddp
    torch.set_num_threads(ARGS.threads)            # (importing DDP also seeds torch and silences warnings globally)
    prof = ddp.SVDProfiler(copy.deepcopy(model), compute_svd=svds is None)
    if svds is not None:                           # same torch.linalg SVD routine; skip recomputing it
        from convsvd.core import linear_layers
        names = list(linear_layers(model))
        SVD = namedtuple('SVD', 'U S V')
        sd = {}
        for k, (layer, _) in _ddp_layers(prof).items():
            s = svds[layer[0]]
            sd[k] = (layer, SVD(s.U, s.S, s.Vh.T))
        prof.svd_dict = sd
        assert sorted(l[0] for l, _ in sd.values()) == sorted(names)
    return prof


def _ddp_layers(prof):
    "DDP's layer index -> (supernode names, None) for its implemented layers, as create_svd enumerates them."
    out = {}
    for nd in sorted(prof.SG.nodes, key=lambda nd: nd[0])[1:]:
        if type(prof.model.available_modules()[nd[1]]) in prof.implemented_classes: out[nd[0]] = (prof.supernodes[nd[1]], None)
    return out


def ddp_pass(prof, batches):
    for xb, _ in batches:
        for i in range(len(xb)): prof.create_influential(xb[i:i + 1])


def ddp_signals(prof, x):
    "DDP's mean projection U^T (Y - b) of every layer for one image (create_projections, averaged as in create_influential)."
    proj = prof.create_projections(x[None])
    return {layer[0]: proj[k].mean(1) for k, (layer, _) in prof.svd_dict.items()}


def run(name, model, batches, reps, with_ddp, share_svd):
    from convsvd.matrization import model_svd
    from convsvd.signals import collect_signals
    n_img = sum(len(x) for x, _ in batches)
    print(f'\n## {name}: {n_img} images, {len(batches)} batches, {torch.get_num_threads()} thread(s)', flush=True)
    plain_pass(model, batches[:1])                                          # warm-up (oneDNN primitives, allocations)
    t = time.perf_counter(); svds = model_svd(model, progress=False); t_svd = time.perf_counter() - t
    svd_bytes = sum(tensor_bytes(s.U, s.S, s.Vh) for s in svds.values())
    u_bytes = sum(tensor_bytes(s.U, s.S) for s in svds.values())
    ss = collect_signals(model, batches[:1], progress=False)                # warm-up
    prof, t_ddp_setup = None, None
    if with_ddp:
        t = time.perf_counter(); prof = make_ddp(model, svds if share_svd else None); t_ddp_setup = time.perf_counter() - t
        ddp_pass(prof, [(batches[0][0][:1], None)])                         # warm-up
    res = {m: [] for m in (['plain', 'convsvd'] + (['ddp'] if with_ddp else []))}
    for r in range(reps):
        res['plain'].append(measured(lambda: plain_pass(model, batches)))
        res['convsvd'].append(measured(lambda: collect_signals(model, batches, progress=False)))
        if with_ddp: res['ddp'].append(measured(lambda: ddp_pass(prof, batches)))
        print(f'  rep {r + 1}/{reps}: ' + ', '.join(f'{m} {v[-1][0]:.3f}s' for m, v in res.items()), flush=True)
    out = {'workload': name, 'images': n_img, 'threads': torch.get_num_threads(), 'svd_seconds': t_svd,
           'svd_cache_MB': svd_bytes / 2**20, 'U_S_MB': u_bytes / 2**20, 'ddp_setup_seconds': t_ddp_setup,
           'ddp_svd_shared': share_svd, 'methods': {}}
    tp = np.median([v[0] for v in res['plain']]); ip = np.median([v[2] - v[1] for v in res['plain']])
    hp = np.median([v[2] for v in res['plain']])
    for m, v in res.items():
        times = np.array([x[0] for x in v]); inc = np.array([x[2] - x[1] for x in v]); peak = np.array([x[2] for x in v])
        paired = times / np.array([x[0] for x in res['plain']])     # each rep's passes ran back to back
        out['methods'][m] = dict(median_s=float(np.median(times)), min_s=float(times.min()), max_s=float(times.max()),
                                 time_ratio=float(np.median(paired)), paired_ratios=paired.tolist(),
                                 min_ratio=float(times.min() / min(x[0] for x in res['plain'])),
                                 peak_increment_MB=float(np.median(inc) / 2**20), peak_MB=float(np.median(peak) / 2**20),
                                 increment_ratio=float(np.median(inc) / ip), peak_ratio=float(np.median(peak) / hp))
    if with_ddp:                                                            # do the two agree? (signs are arbitrary in DDP)
        x0 = batches[0][0][0]
        ours = collect_signals(model, [(x0[None], torch.zeros(1, dtype=torch.long))], progress=False)
        theirs = ddp_signals(prof, x0)
        errs = {}
        for layer, v in theirs.items():
            a, b = torch.from_numpy(ours[layer][0]).double(), v.double()
            errs[layer] = float((a.abs() - b.abs()).norm() / a.norm())
        out['ddp_vs_convsvd_rel_err'] = errs
    return out


def child(which, method):
    "One method in a fresh process: absolute peak RSS (VmHWM) of imports, setup and one pass (for convsvd: per phase)."
    torch.set_num_threads(ARGS.threads)
    name, model, batches = digits_workload() if which == 'digits' else vgg_workload(ARGS.vgg_batches)
    from convsvd.signals import collect_signals
    from convsvd.matrization import model_svd
    phases = {}
    if method == 'plain': plain_pass(model, batches)
    elif method == 'convsvd': collect_signals(model, batches, progress=False)
    elif method == 'convsvd-phases':
        # the phases of collect_signals, measured apart: (imports, model, data), the SVDs it computes first (kept in the
        # cache), then the pass itself (a cache hit for the SVDs). The whole-process peak is the largest phase peak.
        phases['setup'] = status()['VmHWM']
        base = reset_peak(); model_svd(model, progress=False); phases['svd'] = status()['VmHWM']; phases['after_svd'] = status()['VmRSS']
        reset_peak(); collect_signals(model, batches, progress=False); phases['pass'] = status()['VmHWM']
        phases = {k: v / 2**20 for k, v in phases.items()}
        phases['before_svd'] = base / 2**20
    else: ddp_pass(make_ddp(model), batches)
    peak = max(phases.values()) if phases else status()['VmHWM'] / 2**20
    print(json.dumps({'maxrss_MB': peak, 'phases_MB': phases}))   # (ru_maxrss would include the parent's peak: it survives exec)


def vgg_process_peaks():
    "VGG16: whole-process peak of a collect_signals run against a plain inference_mode pass, each in a fresh process."
    out = {}
    for m in ('plain', 'convsvd', 'convsvd-phases'):
        t = time.perf_counter()
        o = subprocess.run([sys.executable, __file__, '--threads', str(ARGS.threads), '--vgg-batches', str(ARGS.vgg_batches),
                            '--child', 'vgg', m], capture_output=True, text=True, check=True)
        out[m] = json.loads(o.stdout.strip().splitlines()[-1]) | {'seconds': time.perf_counter() - t}
    import torchvision
    from convsvd.matrization import model_svd
    vgg = torchvision.models.vgg16()
    weights = sum(p.numel() * 4 for p in vgg.parameters()) / 2**20
    s = model_svd(vgg, layers=['classifier.0'], progress=False)['classifier.0']
    out['sizes_MB'] = {'weights': weights, 'classifier.0 W1': 4096 * 25088 * 4 / 2**20,
                       'classifier.0 Vh': tensor_bytes(s.Vh) / 2**20, 'classifier.0 U': tensor_bytes(s.U) / 2**20}
    return out


def vgg_peak_table(v):
    p, c = v['plain']['maxrss_MB'], v['convsvd']['maxrss_MB']
    ph, sz = v['convsvd-phases']['phases_MB'], v['sizes_MB']
    return (f"**VGG16 whole-process peak, fresh processes** ({ARGS.vgg_batches} batches of 8 at 224x224, {ARGS.threads} thread(s)): "
            f"plain `inference_mode` pass {p:.0f} MB, `collect_signals` {c:.0f} MB = **{c / p:.2f}x** (target 1.15x).\n\n"
            f"What holds memory (a third fresh process, its peak reset before each phase): imports, weights ({sz['weights']:.0f} MB) and data "
            f"{ph['setup']:.0f} MB; during the SVDs {ph['svd']:.0f} MB (peak; classifier.0's W1 alone is {sz['classifier.0 W1']:.0f} MB, "
            f"LAPACK works on a copy and returns Vh of {sz['classifier.0 Vh']:.0f} MB); after them {ph['after_svd']:.0f} MB resident "
            f"(the SVD cache: U, S and Vh of 16 layers); during the pass {ph['pass']:.0f} MB. "
            f"Times: plain process {v['plain']['seconds']:.0f} s, signals process {v['convsvd']['seconds']:.0f} s.")


def table(r):
    lines = [f"**{r['workload']}** ({r['images']} images, {r['threads']} thread(s)). "
             f"One-time SVD of all linear layers (`model_svd`): {r['svd_seconds']:.1f} s, cached "
             f"{r['svd_cache_MB']:.1f} MB (U and S alone: {r['U_S_MB']:.1f} MB)."
             + (f" DDP setup (`SVDProfiler(model)`): {r['ddp_setup_seconds']:.1f} s"
                + (" (its SVD replaced by convsvd's U to save the identical LAPACK call)." if r['ddp_svd_shared'] else ".")
                if r['ddp_setup_seconds'] is not None else ''), '',
             '| method | median time (s) | min-max (s) | time / plain: median of paired reps | best / best plain | peak RSS increment (MB) | increment / plain |',
             '|---|---|---|---|---|---|---|']
    for m, v in r['methods'].items():
        lines.append(f"| {m} | {v['median_s']:.3f} | {v['min_s']:.3f}-{v['max_s']:.3f} | {v['time_ratio']:.3f} "
                     f"({', '.join(f'{x:.2f}' for x in v['paired_ratios'])}) | "
                     f"{v['min_ratio']:.3f} | {v['peak_increment_MB']:.1f} | {v['increment_ratio']:.2f} |")
    if 'ddp_vs_convsvd_rel_err' in r:
        e = r['ddp_vs_convsvd_rel_err']
        worst = max(e, key=e.get)
        lines += ['', f"DDP vs convsvd signal vectors (one image, |values| since DDP's signs are arbitrary): relative error "
                      f"max {e[worst]:.2e} (layer {worst}), median {np.median(list(e.values())):.2e} over {len(e)} layers."]
    return '\n'.join(lines)


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--vgg-reps', type=int, default=3)
    p.add_argument('--vgg-batches', type=int, default=3)
    p.add_argument('--skip-vgg', action='store_true')
    p.add_argument('--skip-ddp', action='store_true')
    p.add_argument('--vgg-peak-only', action='store_true', help='only the VGG16 fresh-process peaks')
    p.add_argument('--child', nargs=2)
    p.add_argument('--json', default=None, help='also write the results as JSON here')
    ARGS = p.parse_args()
    fixed_mmap_threshold()
    torch.set_num_threads(ARGS.threads)
    if ARGS.child: child(*ARGS.child); sys.exit()
    if ARGS.vgg_peak_only:
        v = vgg_process_peaks(); print(json.dumps(v, indent=1)); print(vgg_peak_table(v)); sys.exit()
    results = []
    name, model, batches = digits_workload()
    results.append(run(name, model, batches, ARGS.reps, not ARGS.skip_ddp, share_svd=False))
    sub = {}
    for m in ['plain', 'convsvd'] + ([] if ARGS.skip_ddp else ['ddp']):
        o = subprocess.run([sys.executable, __file__, '--threads', str(ARGS.threads), '--child', 'digits', m],
                           capture_output=True, text=True, check=True)
        sub[m] = json.loads(o.stdout.strip().splitlines()[-1])['maxrss_MB']
    results[-1]['subprocess_maxrss_MB'] = sub
    if not ARGS.skip_vgg:
        name, model, batches = vgg_workload(ARGS.vgg_batches)
        results.append(run(name, model, batches, ARGS.vgg_reps, not ARGS.skip_ddp, share_svd=True))
        del model, batches
        results[-1]['vgg_peaks'] = vgg_process_peaks()
    print()
    for r in results:
        print(table(r))
        if 'subprocess_maxrss_MB' in r:
            s = r['subprocess_maxrss_MB']
            print('\nWhole-process peak (fresh subprocess per method, VmHWM, imports + model + data + one pass): '
                  + ', '.join(f'{m} {v:.0f} MB ({v / s["plain"]:.3f}x)' for m, v in s.items()) + '.')
        if 'vgg_peaks' in r: print('\n' + vgg_peak_table(r['vgg_peaks']))
        print()
    if ARGS.json:
        with open(ARGS.json, 'w') as f: json.dump(results, f, indent=1)

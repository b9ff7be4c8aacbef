"""Influential-direction profiles: convsvd (collect_signals + svd_profile over a dataset in batches) vs DeepDataProfiler.

Workloads, on the same images and layers for both libraries, in one process:
  * digits -- the embedded default model (the paper's N, no in-place ReLU) on the 540 real digits of the test split,
              layers conv1, conv2, fc1, fc2;
  * vgg16  -- torchvision VGG16 (random weights, seeded) on small inputs (--vgg-size, 64x64 by default): crops of
              scikit-image's colour photographs, ImageNet-normalised; its 13 convolutions (each followed by
              ReLU(inplace=True)).
Methods:
  * plain   -- `with torch.inference_mode(): model(x)` over the same batches: the cost of the forward pass alone;
  * convsvd -- `collect_signals(model, data, layers, batch_size)` then `svd_profile(signals, threshold)`; the profile
               step is also timed alone ("after signals": target under 0.5 s for the 540 digits); SVDs cached by a
               warm-up call before timing;
  * ddp     -- DeepDataProfiler 2.0.1 `SVDProfiler(model).create_influential(x, threshold)`, one image per call (the
               only batch size it supports), SVDs computed once before timing (`create_svd` on the same layers);
               and its profile step alone: `create_influential(x, activations=...)` with the activations of its own
               forward pass collected beforehand (it still projects U^T (Y - b) per image; convsvd projects inside
               the batched forward pass, so its "after signals" step is selection only).
Ratios are images per second of convsvd over DDP, end to end and for the profile step; the plain batched forward
  pass over DDP's end-to-end time bounds what any end-to-end method that runs the model can reach.
Agreement: per image and layer, whether the two influential sets are identical, and their mean Jaccard similarity.
  On VGG16 DDP's forward hook keeps the conv output by reference, and the in-place ReLU overwrites it, so DDP
  profiles U^T (ReLU(Y) - b); the control `ddp, ReLU copied` runs DDP on a copy whose ReLUs are not in place,
  which must agree with convsvd again. Also reported: the sums of DDP's weights per image and layer (convsvd's are 1).
Attribution graphs (no DDP counterpart): `attributions` of the 540 digits at the threshold (batches of 64) and
  `attribution_graph` of single digits (what an explorer's image picker calls), for the record.
Threads: --threads 1 by default (the shared 2-core machine makes multi-threaded timings erratic). Importing
  deep_data_profiler seeds torch and silences warnings; it is imported after convsvd's passes are set up.
Usage: python benchmarks/bench_profiles.py [--threads 1] [--reps 3] [--vgg-images 64] [--vgg-size 64] [--skip-vgg]
"""
import argparse, copy, statistics, time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from convsvd.models import IMAGENET_MEAN, IMAGENET_STD, default_model, digits_dataset
from convsvd.profiles import attribution_graph, attributions, svd_profile
from convsvd.signals import collect_signals


def photo_crops(n, size, seed=0):
    "n crops of scikit-image's colour photographs, resized to size x size, ImageNet-normalised; label = photograph."
    from skimage import data
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    g, xs, ys = np.random.default_rng(seed), [], []
    for i in range(n):
        k = i % len(photos); p = photos[k]
        s = int(g.integers(min(p.shape[:2]) // 3, min(p.shape[:2])))
        r, c = g.integers(0, p.shape[0] - s + 1), g.integers(0, p.shape[1] - s + 1)
        t = torch.tensor(p[r:r + s, c:c + s], dtype=torch.float32).permute(2, 0, 1)[None] / 255
        xs.append(nn.functional.interpolate(t, size=(size, size), mode='bilinear', antialias=True, align_corners=False)[0])
        ys.append(k)
    x = (torch.stack(xs) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x, torch.tensor(ys)


def plain_run(model, x, batch_size, reps):
    "Best-of-reps time of the model's batched forward pass over x."
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(x), batch_size): model(x[s:s + batch_size])
        ts.append(time.perf_counter() - t0)
    return min(ts)


def convsvd_run(model, data, layers, batch_size, threshold, reps):
    "Best-of-reps times of signals+profile and of the profile alone (median too); the signals and the profile."
    collect_signals(model, data, layers=layers, batch_size=batch_size, progress=False)      # warm-up: SVDs cached
    full, prof = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        s = collect_signals(model, data, layers=layers, batch_size=batch_size, progress=False)
        t1 = time.perf_counter()
        p = svd_profile(s, threshold)
        t2 = time.perf_counter()
        full.append(t2 - t0); prof.append(t2 - t1)
    return min(full), min(prof), statistics.median(prof), s, p


def ddp_profiler(ddp, model, layers):
    "DDP's SVDProfiler on a copy of `model` with SVDs of `layers` only; name -> DDP's layer key."
    prof = ddp.SVDProfiler(copy.deepcopy(model), compute_svd=False)
    order = sorted(prof.SG.nodes, key=lambda nd: nd[0])
    keys = [k for k, (_, name) in enumerate(order) if name in layers]
    prof.svd_dict = prof.create_svd(layers_to_find=keys)
    return prof, {v[0][0]: k for k, v in prof.svd_dict.items()}


def ddp_run(prof, x, threshold):
    "DDP's influential sets and weight sums of every image (one call per image), its total time, and its time given activations."
    sets, sums = [], []
    t0 = time.perf_counter()
    for i in range(len(x)):
        p = prof.create_influential(x[i:i + 1], threshold=threshold)
        sets.append({k: set(np.asarray(m.tocoo().col).tolist()) for k, m in p.neuron_counts.items()})
        sums.append({k: float(m.sum()) for k, m in p.neuron_weights.items()})
    total = time.perf_counter() - t0
    acts = [dict(prof.model.forward(x[i:i + 1])[1]) for i in range(len(x))]
    t0 = time.perf_counter()
    for i in range(len(x)): prof.create_influential(x[i:i + 1], threshold=threshold, activations=acts[i])
    return total, time.perf_counter() - t0, sets, sums


def agreement(profile, ddp_sets, keys):
    "Per layer: (share of images with identical sets, mean Jaccard of the sets)."
    out = {}
    for name, k in keys.items():
        same, jac = [], []
        for i, d in enumerate(ddp_sets):
            ours = set(profile.counts[name][i].indices.tolist())
            same.append(ours == d[k]); jac.append(len(ours & d[k]) / max(len(ours | d[k]), 1))
        out[name] = (float(np.mean(same)), float(np.mean(jac)))
    return out


def attribution_times(model, x, threshold, n_single=20):
    "Seconds for the attributions of all of x, and per single-image attribution graph (median)."
    attributions(model, x[:2], threshold=threshold)                         # warm-up
    t0 = time.perf_counter(); att = attributions(model, x, threshold=threshold); total = time.perf_counter() - t0
    one = []
    for i in range(n_single):
        t0 = time.perf_counter(); attribution_graph(model, x[i], threshold=threshold); one.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); [att.graph(i) for i in range(n_single)]; regraph = (time.perf_counter() - t0) / n_single
    return total, statistics.median(one), regraph


def no_inplace(model):
    "A copy of `model` whose in-place ReLUs are ordinary ReLUs."
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU): mod.inplace = False
    return m


def report(name, n, plain, conv, ddp_time, ddp_step, agree, sums, control=None):
    full, prof_best, prof_med = conv[:3]
    print(f"\n### {name}: {n} images, layers {', '.join(agree)}")
    print("| method | total s | ms / image | images / s |\n|---|---|---|---|")
    row = lambda what, t, extra='': print(f"| {what} | {t:.4f}{extra} | {1e3 * t / n:.4f} | {n / t:.1f} |")
    row('plain batched forward pass (reference)', plain)
    row('convsvd signals + profiles', full)
    row('convsvd profiles after signals', prof_best, f' (median {prof_med:.4f})')
    row('DeepDataProfiler create_influential', ddp_time)
    row('DeepDataProfiler create_influential given activations', ddp_step)
    print(f"\n**images per second, convsvd / DeepDataProfiler: end to end {ddp_time / full:.1f}x, profile step "
          f"{ddp_step / prof_best:.0f}x** (a plain batched forward pass alone is {ddp_time / plain:.1f}x DDP's end-to-end rate)")
    print("\n| layer | identical sets | mean Jaccard |" + (" identical, DDP on ReLU copies | mean Jaccard |" if control else "")
          + " DDP weight sums min / mean / max |")
    print("|---|---|---|" + ("---|---|" if control else "") + "---|")
    for k, (same, jac) in agree.items():
        s = np.array([d[k] for d in sums])
        extra = f" {control[k][0]:.1%} | {control[k][1]:.3f} |" if control else ""
        print(f"| {k} | {same:.1%} | {jac:.3f} |{extra} {s.min():.3f} / {s.mean():.3f} / {s.max():.3f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threshold', type=float, default=0.1)
    ap.add_argument('--vgg-images', type=int, default=64)
    ap.add_argument('--vgg-size', type=int, default=64)
    ap.add_argument('--skip-vgg', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), threshold {a.threshold}")

    model, test = default_model(), digits_dataset(train=False)
    layers = ['conv1', 'conv2', 'fc1', 'fc2']
    conv = convsvd_run(model, test, layers, 64, a.threshold, a.reps)
    plain = plain_run(model, test.data, 64, a.reps)
    att_all, att_one, regraph = attribution_times(model, test.data, a.threshold)
    if not a.skip_vgg:
        import torchvision
        torch.manual_seed(0)
        vgg = torchvision.models.vgg16().eval()
        xv, yv = photo_crops(a.vgg_images, a.vgg_size)
        vlayers = [n for n, m in vgg.named_modules() if isinstance(m, nn.Conv2d)]
        conv_v = convsvd_run(vgg, TensorDataset(xv, yv), vlayers, 16, a.threshold, a.reps)
        plain_v = plain_run(vgg, xv, 16, a.reps)

    import deep_data_profiler as ddp                     # seeds torch and silences warnings: imported last
    prof, keys = ddp_profiler(ddp, model, layers)
    with torch.no_grad(): t, step, sets, sums = ddp_run(prof, test.data, a.threshold)
    report('Default model (digits)', len(test), plain, conv, t, step, agreement(conv[4], sets, keys), [{n: d[k] for n, k in keys.items()} for d in sums])
    print(f"\nattribution graphs: attributions of all {len(test)} digits {att_all:.2f} s; attribution_graph of one digit "
          f"{1e3 * att_one:.1f} ms (median); re-selecting a graph from stored attributions {1e3 * regraph:.2f} ms")
    if not a.skip_vgg:
        prof, keys = ddp_profiler(ddp, vgg, vlayers)
        with torch.no_grad(): t, step, sets, sums = ddp_run(prof, xv, a.threshold)
        prof2, keys2 = ddp_profiler(ddp, no_inplace(vgg), vlayers)
        with torch.no_grad(): _, _, sets2, _ = ddp_run(prof2, xv, a.threshold)
        report(f'VGG16 (random init, {a.vgg_size}x{a.vgg_size} inputs)', len(xv), plain_v, conv_v, t, step, agreement(conv_v[4], sets, keys),
               [{n: d[k] for n, k in keys.items()} for d in sums], agreement(conv_v[4], sets2, keys2))


if __name__ == '__main__':
    main()

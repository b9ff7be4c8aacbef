"""Feature visualisation: convsvd.featurevis.visualize against Lucent 0.1.8 in one run.

Same objective and settings on both sides: torchvision VGG16 (random init, seed 0), the channel objective of conv3_3
(`features.14`, channel 0; Lucent's by-reference hook actually reads it after the in-place ReLU, so convsvd is also
run on `features.15`, the same post-ReLU objective), a 128 px RGB image in Lucid's FFT + colour-decorrelated parameterisation, Lucid's standard
transforms, ImageNet normalisation, Adam lr 0.05, one thread. Lucent runs (a) with `fixed_image_size=128` (the network
sees 128 px) and (b) with its default, which silently upsamples every image below 224 px to 224 px. convsvd runs
(c) with `preprocess=dict(mean, std, size=128)`, the same 128 px network input as (a), and (d) with no resize
(Lucid's transforms grow the 128 px image to 140 px). Then k singular vectors of the same layer rendered in one
batched optimisation (with visualize's default chunking, and with the whole batch in one pass) against k separate
renders, on VGG16 and on the default digits model, with 1 and 2 threads: medians of alternating repeats, wall clock
and minor page faults (the cost of a batch whose activations glibc hands back to the OS at every step).

Requirements (the `bench` extra): torch-lucent==0.1.8 installed with --no-deps, kornia==0.4.1 (--no-deps; it imports
and runs unchanged on torch 2.x, no shim needed), decorator (Lucent's objectives), plus Lucent's imports that are
already convsvd requirements (numpy, torch, torchvision, tqdm, pillow, scikit-learn, IPython).

    python benchmarks/bench_featurevis.py                 # 256 steps, as specified
    python benchmarks/bench_featurevis.py --steps 64      # shorter run, same per-step settings
    python benchmarks/bench_featurevis.py --batch-only    # only batched against separate renders
"""
import argparse, copy, platform, resource, statistics, time, warnings

import numpy as np
import torch
import torchvision

from convsvd.featurevis import IMAGENET_MEAN, IMAGENET_STD, channel, direction, objective_values, singular_vector, visualize
from convsvd.matrization import layer_svd
from convsvd.models import default_model


def lucent_render(model, steps, fixed):
    "Lucent's render_vis on conv3_3 channel 0; returns (seconds, image (1, 3, 128, 128), hooks left behind)."
    from lucent.optvis import objectives, param, render
    np.random.seed(0); torch.manual_seed(0)
    t, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        imgs = render.render_vis(model, objectives.channel('features_14', 0), param_f=lambda: param.image(128),
                                 thresholds=(steps,), show_image=False, progress=False, fixed_image_size=fixed)
    dt = (time.perf_counter() - t, time.process_time() - c)
    leaked = sum(len(m._forward_hooks) for m in model.modules())
    for m in model.modules(): m._forward_hooks.clear()      # Lucent never removes its hooks; clean up between runs
    return dt, torch.tensor(imgs[-1]).permute(0, 3, 1, 2), leaked


def lucent_reads_post_relu(model):
    "Lucent's hook on features_14 keeps the output by reference; the in-place ReLU (features.15) then overwrites it."
    from lucent.optvis import render
    x = torch.randn(1, 3, 64, 64)
    hook = render.hook_model(model, lambda: x)
    with torch.no_grad(): model(x)
    stored = hook('features_14').clone()
    for m in model.modules(): m._forward_hooks.clear()
    with torch.no_grad(): pre = model.features[:15](x)
    return float(stored.min()), float(pre.min())


def ours_render(model, steps, size, layer='features.14'):
    pre = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, size=size) if size else 'imagenet'
    t, c = time.perf_counter(), time.process_time()
    r = visualize(model, channel(layer, 0), image_size=128, steps=steps, preprocess=pre, seed=0, progress=False)
    return (time.perf_counter() - t, time.process_time() - c), r.images, r.settings['network_input']


def timed(fn):
    "(wall s, CPU s, minor page faults) of fn()."
    f, t, c = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t, time.process_time() - c, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f), out


def batched_vs_separate(model, layer, k, steps, repeats, **kw):
    """One batched render of k singular vectors (default chunking, and the whole batch in one pass) against k separate
    renders, alternating; returns the median (wall, CPU, faults) of each, the chunk used, and the mean final objectives."""
    obj = singular_vector(layer, list(range(k)))
    runs = {'batched': [], 'whole': [], 'separate': []}
    for _ in range(repeats):
        dt, r = timed(lambda: visualize(model, obj, steps=steps, progress=False, **kw)); runs['batched'].append(dt)
        dt, _ = timed(lambda: visualize(model, obj, steps=steps, progress=False, chunk=k, **kw)); runs['whole'].append(dt)
        dt, sep = timed(lambda: [visualize(model, singular_vector(layer, i), steps=steps, progress=False, **kw) for i in range(k)])
        runs['separate'].append(dt)
    med = {n: tuple(statistics.median(d[j] for d in v) for j in range(3)) for n, v in runs.items()}
    vb = objective_values(model, obj, r.images, preprocess=kw.get('preprocess')).mean()
    vs = objective_values(model, obj, torch.cat([s.images for s in sep]), preprocess=kw.get('preprocess')).mean()
    return med, r.settings['chunk'], vb, vs


def input_vs_output_route(model, layer, steps, repeats, **kw):
    """singular_vector(layer, 0) reads the summed receptive fields of the layer's input, so the layer never runs;
    direction(layer, u_0) takes the same gradient through the layer's output. Median wall seconds of each, alternating."""
    u = layer_svd(model.get_submodule(layer)).U[:, 0].float()
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(lambda: visualize(model, singular_vector(layer, 0), steps=steps, progress=False, **kw))[0][0])
        b.append(timed(lambda: visualize(model, direction(layer, u), steps=steps, progress=False, **kw))[0][0])
    return statistics.median(a), statistics.median(b)


def batch_rows(label, med, chunk, k, steps, threads, vb, vs):
    b, w, s = med['batched'], med['whole'], med['separate']
    print(f"| {label} | {threads} | {k} | {steps} | {chunk} | {b[0]:.2f} ({b[2] / 1e3:.0f}k faults) | {w[0]:.2f} ({w[2] / 1e3:.0f}k faults) | {s[0]:.2f} | "
          f"**{s[0] / b[0]:.2f}x** | {s[0] / w[0]:.2f}x | {vb:.4g} / {vs:.4g} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=256, help='optimisation steps of the Lucent comparison')
    ap.add_argument('--repeats', type=int, default=1, help='alternating repeats; the median time is reported')
    ap.add_argument('--batch-only', action='store_true', help='only the batched-versus-separate comparison')
    ap.add_argument('--k', type=int, default=4, help='singular vectors in the batched render (VGG16)')
    ap.add_argument('--batch-steps', type=int, default=32, help='steps of the batched-versus-separate comparison (VGG16)')
    ap.add_argument('--batch-repeats', type=int, default=5, help='alternating repeats of the batched-versus-separate comparison')
    ap.add_argument('--batch-threads', type=int, nargs='+', default=[1, 2], help='torch threads for the batched-versus-separate comparison')
    ap.add_argument('--skip-224', action='store_true', help="skip Lucent's default 224 px run (the slowest)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    lvgg = copy.deepcopy(vgg)                                 # Lucent hooks every module of its copy
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.processor() or platform.machine()}, "
          f"1 thread, VGG16 random init, conv3_3 (features.14) channel 0, 128 px, {a.steps} steps, {a.repeats} repeat(s)")
    post, pre = lucent_reads_post_relu(lvgg)
    print(f"Lucent's stored features_14 output has minimum {post:.3g} (post-ReLU); the true conv3_3 output has minimum "
          f"{pre:.3g}: Lucent optimises mean(ReLU(Y_c)). Both convsvd objectives are run: features.14 (pre-activation, "
          f"the intended one) and features.15 (the in-place ReLU's output = what Lucent effectively optimises).")
    runs = {'lucent_128': [], 'lucent_224': [], 'ours_128': [], 'ours_128_relu': [], 'ours_140': []}
    final = {}
    for rep in range(0 if a.batch_only else a.repeats):
        dt, img, leaked = lucent_render(lvgg, a.steps, 128); runs['lucent_128'].append(dt); final['lucent_128'] = img
        dt, img, net_in = ours_render(vgg, a.steps, 128); runs['ours_128'].append(dt); final['ours_128'] = img
        dt, img, _ = ours_render(vgg, a.steps, 128, 'features.15'); runs['ours_128_relu'].append(dt); final['ours_128_relu'] = img
        if not a.skip_224:
            dt, img, _ = lucent_render(lvgg, a.steps, None); runs['lucent_224'].append(dt); final['lucent_224'] = img
        dt, img, net_in140 = ours_render(vgg, a.steps, None); runs['ours_140'].append(dt); final['ours_140'] = img
    if not a.batch_only:
        med = {k: statistics.median(w for w, _ in v) for k, v in runs.items() if v}
        cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items() if v}
        sps = {k: a.steps / v for k, v in med.items()}
        cps = {k: a.steps / v for k, v in cpu.items()}
        obj = channel('features.14', 0)
        val = {k: objective_values(vgg, obj, final[k], preprocess='imagenet')[0] for k in med}
        rows = [('Lucent 0.1.8, fixed_image_size=128', 'lucent_128', '128'),
                ('Lucent 0.1.8, default (upsampled to 224)', 'lucent_224', '224'),
                ("convsvd, preprocess size=128", 'ours_128', str(net_in[1])),
                ("convsvd, preprocess size=128, objective on the ReLU (Lucent's effective objective)", 'ours_128_relu', str(net_in[1])),
                ('convsvd, no resize', 'ours_140', str(net_in140[1]))]
        print(f"\n| run | network input (px) | wall s / {a.steps} steps | CPU s / {a.steps} steps | steps per CPU s | vs Lucent fixed 128 (CPU) | vs Lucent fixed 128 (wall) | final objective (untransformed) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, key, px in rows:
            if key not in med: continue
            print(f"| {name} | {px} | {med[key]:.1f} | {cpu[key]:.1f} | {cps[key]:.2f} | {cps[key] / cps['lucent_128']:.2f}x | "
                  f"{sps[key] / sps['lucent_128']:.2f}x | {val[key]:.3g} |")
        print(f"\nLucent left {leaked} forward hooks on the model after one render_vis call; convsvd leaves none "
              f"({sum(len(m._forward_hooks) for m in vgg.modules())}).")

    torch.set_num_threads(1)
    a_in, a_out = input_vs_output_route(vgg, 'features.14', a.batch_steps, a.batch_repeats, image_size=128, preprocess='imagenet', seed=0)
    print(f"\nOne singular vector of VGG16 features.14, 128 px, {a.batch_steps} steps, 1 thread: read from the layer's input "
          f"(the layer never runs) {a_in:.2f} s, the same gradient through the layer's output {a_out:.2f} s: {a_out / a_in:.2f}x")
    print(f"\n| model, layer | threads | k | steps | chunk | one batched render (wall s) | whole batch in one pass (wall s) | "
          f"k separate renders (wall s) | speed-up | whole-batch speed-up | objective batched / separate (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    net = default_model()
    for threads in a.batch_threads:
        torch.set_num_threads(threads)
        med, chunk, vb, vs = batched_vs_separate(vgg, 'features.14', a.k, a.batch_steps, a.batch_repeats, image_size=128, preprocess='imagenet', seed=0)
        batch_rows('VGG16 features.14, 128 px', med, chunk, a.k, a.batch_steps, threads, vb, vs)
        for layer in ('fc1', 'conv2'):
            med, chunk, vb, vs = batched_vs_separate(net, layer, 8, 128, a.batch_repeats, image_size=28, channels=1, seed=0)
            batch_rows(f'default digits model {layer}, 28 px', med, chunk, 8, 128, threads, vb, vs)


if __name__ == '__main__':
    main()

"""The signal store (convsvd.signals.collect_signals(..., store=PATH)) on a dataset generated on the fly.

Workload: N synthetic 3x64x64 images (image i is image i % 1024 of a fixed random bank, scaled by 1 + i // 1024 / 1000:
every image differs, no image is kept) through a small CNN (three stride-2 3x3 convolutions 3->16->32->64, ReLU,
global average pool, Linear 64->10: 122 signal values per image), batches of 256, 1 intra-op thread per process.

  * memory -- each of  store run at 20k / 100k / 200k images,  in-memory run at 200k,  plain pass at 200k  in a fresh
              process: VmHWM (whole-process peak: imports, model, data, pass). Flat means the same peak at every size.
  * time   -- paired repetitions in one process (plain pass over the same DataLoader batches, then the store run into a
              fresh directory): median of store / plain per repetition; and the single 200k runs of the memory step.
  * size   -- bytes on disk of the 200k store per image (signal vectors, labels, predictions, indices, zstd + CRC32C).
  * ranks  -- 2 processes (gloo, file:// rendezvous, torch.multiprocessing.spawn) against 1 process on the same images:
              wall time of collect_signals (from after the process group is up to its return, the slower rank) and the
              largest relative difference between the two stores.
Usage: python benchmarks/bench_store.py [--sizes 20000 100000 200000] [--reps 3] [--rep-images 20000] [--rank-images 40000]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Synthetic(torch.utils.data.Dataset):
    "N images generated on the fly from a fixed bank of 1024 random images (deterministic per index); labels i % 10."
    def __init__(self, n:int):
        self.n = n
        self.bank = torch.randn(1024, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    def __len__(self): return self.n
    def __getitem__(self, i): return self.bank[i % 1024] * (1 + (i // 1024) / 1000), i % 10
    def __getitems__(self, idx:list):
        "A whole batch at once (the DataLoader's batched fetch)."
        i = torch.as_tensor(idx)
        x = self.bank[i % 1024] * (1 + (i // 1024).float() / 1000)[:, None, None, None]
        return list(zip(x, (i % 10).tolist()))


def small_cnn()->nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True), nn.Conv2d(16, 32, 3, stride=2),
                         nn.ReLU(inplace=True), nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def vmhwm_mb()->float:
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'): return int(line.split()[1]) / 1024


def plain_pass(model, ds, bs):
    from torch.utils.data import DataLoader
    with torch.inference_mode():
        for x, _ in DataLoader(ds, batch_size=bs): model(x)


def store_run(model, ds, bs, path):
    from convsvd.signals import collect_signals
    return collect_signals(model, ds, store=path, batch_size=bs, progress=False)


def child(kind:str, n:int, path:str):
    "One run in this fresh process; prints its time and whole-process peak."
    torch.set_num_threads(1)
    from convsvd.signals import collect_signals
    model, ds = small_cnn(), Synthetic(n)
    t, c = time.perf_counter(), time.process_time()
    if kind == 'plain': plain_pass(model, ds, ARGS.batch)
    elif kind == 'store': store_run(model, ds, ARGS.batch, path)
    else: collect_signals(model, ds, batch_size=ARGS.batch, progress=False)
    print(json.dumps({'seconds': time.perf_counter() - t, 'cpu_s': time.process_time() - c, 'peak_MB': vmhwm_mb()}))


def ranked(rank:int, world:int, init:str, n:int, path:str, out:str, batch:int):
    "One rank of the gloo run (torch.multiprocessing.spawn)."
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init}', rank=rank, world_size=world)
    dist.barrier()
    t, c = time.perf_counter(), time.process_time()
    store_run(small_cnn(), Synthetic(n), batch, path)
    Path(out, f'rank{rank}.json').write_text(json.dumps({'seconds': time.perf_counter() - t, 'cpu_s': time.process_time() - c}))
    dist.destroy_process_group()


def sub(kind, n, path=''):
    o = subprocess.run([sys.executable, __file__, '--child', kind, str(n), path, '--batch', str(ARGS.batch)],
                       capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    return json.loads(o.stdout.strip().splitlines()[-1])


def du(path:Path)->int: return sum(p.stat().st_size for p in Path(path).rglob('*') if p.is_file())


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--sizes', type=int, nargs='+', default=[20000, 100000, 200000])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--rep-images', type=int, default=20000)
    p.add_argument('--rank-images', type=int, default=40000)
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--child', nargs=3)
    p.add_argument('--json', default=None)
    ARGS = p.parse_args()
    if ARGS.child: child(ARGS.child[0], int(ARGS.child[1]), ARGS.child[2]); sys.exit()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix='convsvd-bench-store-'))
    res = {'load_before': os.getloadavg()}
    try:
        # time: paired repetitions in this process
        model, ds = small_cnn(), Synthetic(ARGS.rep_images)
        plain_pass(model, Synthetic(2048), ARGS.batch); store_run(model, Synthetic(2048), ARGS.batch, tmp/'warm.zarr')
        pairs = []
        for r in range(ARGS.reps):
            t = time.perf_counter(); plain_pass(model, ds, ARGS.batch); tp = time.perf_counter() - t
            t = time.perf_counter(); store_run(model, ds, ARGS.batch, tmp/f'rep{r}.zarr'); ts = time.perf_counter() - t
            pairs.append((tp, ts)); shutil.rmtree(tmp/f'rep{r}.zarr')
            print(f'rep {r + 1}: plain {tp:.1f} s, store {ts:.1f} s, ratio {ts / tp:.3f}', flush=True)
        res['pairs'] = pairs
        # memory (fresh processes) and size
        res['store'] = {n: sub('store', n, str(tmp/f'{n}.zarr')) for n in ARGS.sizes}
        for n in ARGS.sizes: print(f'store {n}: {res["store"][n]}', flush=True)
        big = max(ARGS.sizes)
        res['bytes_per_image'] = du(tmp/f'{big}.zarr') / big
        res['memory'] = sub('memory', big); print('in memory', big, res['memory'], flush=True)
        res['plain'] = sub('plain', big); print('plain', big, res['plain'], flush=True)
        for n in ARGS.sizes[:-1]: shutil.rmtree(tmp/f'{n}.zarr')
        # ranks: 2 processes against 1
        import torch.multiprocessing as mp
        from convsvd.signals import SignalSet
        n = ARGS.rank_images
        one = sub('store', n, str(tmp/'one.zarr'))
        (tmp/'out').mkdir()
        mp.spawn(ranked, args=(2, str(tmp/'rdzv'), n, str(tmp/'two.zarr'), str(tmp/'out'), ARGS.batch), nprocs=2, join=True)
        ranks = [json.loads((tmp/'out'/f'rank{r}.json').read_text()) for r in range(2)]
        two = max(r['seconds'] for r in ranks)
        a, b = SignalSet.open(tmp/'one.zarr'), SignalSet.open(tmp/'two.zarr')
        rel = max(float(np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()) for k in a.layers)
        same = all(np.array_equal(a[k], b[k]) for k in a.layers) and np.array_equal(a.indices, b.indices)
        res['ranks'] = {'images': n, 'one_s': one['seconds'], 'two_s': two, 'max_rel_diff': rel, 'bit_equal': same,
                        'one_cpu_s': one['cpu_s'], 'rank_cpu_s': [r['cpu_s'] for r in ranks]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res['load_after'] = os.getloadavg()
    tp, ts = np.array(res['pairs']).T
    print(f"\nload average before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f} (1 min)")
    print(f"\ntime, {ARGS.rep_images} images x {ARGS.reps} paired reps: plain {np.median(tp):.1f} s, store {np.median(ts):.1f} s, "
          f"store / plain median {np.median(ts / tp):.3f} ({', '.join(f'{x:.3f}' for x in ts / tp)})")
    print('\n| run (fresh process) | images | time (s) | images/s | peak RSS (MB) |\n|---|---|---|---|---|')
    for n, v in res['store'].items(): print(f"| store | {n} | {v['seconds']:.1f} | {n / v['seconds']:.0f} | {v['peak_MB']:.0f} |")
    for k in ('memory', 'plain'):
        v = res[k]; print(f"| {'in memory' if k == 'memory' else 'plain forward'} | {big} | {v['seconds']:.1f} | {big / v['seconds']:.0f} | {v['peak_MB']:.0f} |")
    print(f"\nstore size: {res['bytes_per_image']:.0f} bytes per image ({res['bytes_per_image'] / 122 / 4:.3f} x the raw float32 signals)")
    r = res['ranks']
    print(f"\nranks, {r['images']} images: 1 process {r['one_s']:.1f} s, 2 processes (gloo) {r['two_s']:.1f} s "
          f"({r['one_s'] / r['two_s']:.2f}x faster); CPU time: 1 process {r['one_cpu_s']:.1f} s, the 2 ranks "
          f"{' and '.join(f'{c:.1f}' for c in r['rank_cpu_s'])} s; stores bit-equal: {r['bit_equal']}, max relative difference {r['max_rel_diff']:.1e}")
    if ARGS.json: Path(ARGS.json).write_text(json.dumps(res, indent=1, default=str))

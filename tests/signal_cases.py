"A small model and dataset shared by the signal store tests and the processes they start (not a test module)."
import os, signal, time
from datetime import timedelta

import torch
import torch.nn as nn
from torch.utils.data import Dataset

N, CHUNK, BATCH = 300, 32, 16     # 10 chunks: 9 of 32 images and one of 12


def tiny_model(seed:int=0)->nn.Module:
    "A small CNN with two convolutions and a head (built without touching the caller's RNG)."
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


class Images(Dataset):
    "n deterministic random 3x12x12 images labelled i % 5; optionally slow, killing its process at image `kill_at`, or "
    "waiting at image `wait_at` until `until()` is true (at most 10 minutes)."
    classes = ['a', 'b', 'c', 'd', 'e']
    def __init__(self, n:int=N, delay:float=0.0, kill_at:int=None, kill_rank:int=None, wait_at:int=None, until=None):
        self.n, self.delay, self.kill_at, self.kill_rank, self.wait_at, self.until = n, delay, kill_at, kill_rank, wait_at, until
    def __len__(self): return self.n
    def __getitem__(self, i):
        if i == self.kill_at and (self.kill_rank is None or torch.distributed.get_rank() == self.kill_rank):
            os.kill(os.getpid(), signal.SIGKILL)
        if i == self.wait_at:
            t = time.time()
            while not (self.until and self.until()) and time.time() - t < 600: time.sleep(0.02)
        if self.delay: time.sleep(self.delay)
        return torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(int(i))), int(i) % 5


def ranked_run(rank:int, world:int, init_file:str, store:str, kill_at=None):
    "One rank of a gloo run into `store` (started by torch.multiprocessing.spawn)."
    import torch.distributed as dist
    from convsvd.signals import collect_signals
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try: collect_signals(tiny_model(), Images(kill_at=kill_at, kill_rank=1), store=store, chunk=CHUNK, batch_size=BATCH,
                         progress=False)
    finally: dist.destroy_process_group()

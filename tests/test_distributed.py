"collect_signals under torch.distributed (issue 13): 2 gloo processes on the CPU write one store, equal to a single-process run."
import os, tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import zarr

from convsvd.signals import SignalSet, collect_signals
from signal_cases import BATCH, CHUNK, N, Images, ranked_run, tiny_model

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='needs torch.distributed with gloo')


@pytest.fixture(scope='module')
def reference():
    torch.set_num_threads(1)
    return collect_signals(tiny_model(), Images(), batch_size=BATCH, progress=False)


def assert_close(ss:SignalSet, ref:SignalSet):
    "Same images in the same order, values within 1e-5 relative."
    assert ss.layers == ref.layers and ss.classes == ref.classes
    for k in ('labels', 'predictions', 'indices'): np.testing.assert_array_equal(getattr(ss, k), getattr(ref, k))
    for k in ref.layers: np.testing.assert_allclose(ss[k], ref[k], rtol=1e-5, atol=1e-5 * np.abs(ref[k]).max())


def spawn(store:Path, kill_at=None):
    init = Path(tempfile.mkdtemp(prefix='convsvd-rdzv-'))/'init'    # a file:// rendezvous: no port to pick
    mp.spawn(ranked_run, args=(2, str(init), str(store), kill_at), nprocs=2, join=True)


def test_two_gloo_ranks_write_one_store(tmp_path, reference):
    store = tmp_path/'two.zarr'
    spawn(store)
    ss = SignalSet.open(store)
    assert_close(ss, reference)
    assert (zarr.open_group(str(store), mode='r')['done'][:] == 1).all()


def test_a_rank_that_dies_leaves_a_store_a_rerun_completes(tmp_path, reference):
    "Rank 1 is SIGKILLed in its second chunk: the job fails, the chunks written are kept, one process finishes the store."
    store = tmp_path/'died.zarr'
    with pytest.raises(Exception):
        spawn(store, kill_at=3 * CHUNK + 5)           # chunk 3 is rank 1's second one (ranks take 0, 2, 4... and 1, 3, 5...)
    done = zarr.open_group(str(store), mode='r')['done'][:]
    assert done[1] == 1 and done[3] == 0              # rank 1 wrote chunk 1 before it died in chunk 3
    model = tiny_model()
    from convsvd.core import capture
    with capture(model, ['0'], fn=lambda n, m, y: len(y), accumulate=True) as acts:
        ss = collect_signals(model, Images(), store=store, chunk=CHUNK, batch_size=BATCH, progress=False)
    missing = [i for i in range(len(done)) if done[i] != 1]
    assert sum(acts['0']) == sum(min(CHUNK, N - i * CHUNK) for i in missing)
    assert_close(ss, reference)

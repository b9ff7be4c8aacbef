"The signal store (issue 13): equal to the SignalSet in memory, bounded memory, exact quantiles, resume after SIGKILL, locks, bad input."
import errno, json, os, shutil, signal, subprocess, sys, tempfile, threading, time, tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import zarr
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from torch.utils.data import DataLoader, Subset, TensorDataset

import convsvd.signals as S
from convsvd.core import capture
from convsvd.signals import SignalSet, collect_signals, exemplary_images
from signal_cases import BATCH, CHUNK, N, Images, tiny_model

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def ref():
    return collect_signals(tiny_model(), Images(), batch_size=BATCH, progress=False)


@pytest.fixture(scope='module')
def stored(tmp_path_factory):
    return collect_signals(tiny_model(), Images(), store=tmp_path_factory.mktemp('s')/'run.zarr', chunk=CHUNK,
                           batch_size=BATCH, progress=False)


def files(path:Path, relative:bool=False)->dict:
    "The bytes of every file of a store but its lock (and the attributes, but for their creation time)."
    out = {p: p.read_bytes() for p in sorted(Path(path).rglob('*')) if p.is_file() and p.name != 'writer.lock'}
    meta = json.loads(out.pop(Path(path)/'zarr.json'))
    meta['attributes']['convsvd_signals'].pop('created')
    out[Path(path)/'zarr.json'] = meta
    return {p.relative_to(path): v for p, v in out.items()} if relative else out


def images_seen(model, fn):
    "fn() and the number of images the model's first layer saw."
    with capture(model, ['0'], fn=lambda n, m, y: len(y), accumulate=True) as acts: out = fn()
    return out, sum(acts.get('0', []))


def assert_same(a:SignalSet, b:SignalSet):
    assert a.layers == b.layers and a.ranks == b.ranks and a.classes == b.classes and len(a) == len(b)
    for k in a.layers: np.testing.assert_array_equal(a[k], b[k]); np.testing.assert_array_equal(a.singular_values[k], b.singular_values[k])
    for k in ('labels', 'predictions', 'indices'): np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_store_equals_memory(ref, stored, tmp_path):
    "Every method of the SignalSet contract gives on the store what it gives in memory (same batches: same bits)."
    assert stored.store is not None and ref.store is None and 'stored in' in repr(stored)
    assert isinstance(stored._array('0'), zarr.Array)                 # lazily opened: nothing loaded
    assert_same(stored, ref)
    assert stored.accuracy == ref.accuracy and list(stored) == list(ref) and '6' in stored
    for k in ref.layers:
        q = [0, 0.01, 0.5, 0.85, 0.9, 0.95, 0.999, 1]
        np.testing.assert_array_equal(stored.quantile(k, q), ref.quantile(k, q))
        assert stored.quantile(k, 0.85) == ref.quantile(k, 0.85) == np.quantile(ref[k], 0.85)
        assert stored.class_means(k).equals(ref.class_means(k)) and stored.class_counts().equals(ref.class_counts())
        for c in range(5): np.testing.assert_array_equal(stored.class_rows(k, c), ref.class_rows(k, c))
        for mb in (2**28, 500):                                       # one pass, or one pass per class
            got = dict(stored.iter_classes(k, max_bytes=mb))
            assert sorted(got) == list(range(5)) and all(np.array_equal(got[c], ref.class_rows(k, c)) for c in got)
        np.testing.assert_array_equal(np.concatenate([b for _, b in stored.iter_rows(k, chunk=45)]), ref[k])
        assert [s for s, _ in stored.iter_rows(k)] == list(range(0, N, CHUNK))
        assert stored.to_frame(k).equals(ref.to_frame(k)) and stored.to_frame(k, long=True).equals(ref.to_frame(k, long=True))
    for which in (ref.labels == 3, [299, 5, -1, 5, 0], np.arange(40, 90)):
        assert_same(stored.subset(which), ref.subset(which))
    assert_same(stored.sample_per_class(20), ref.sample_per_class(20))
    assert_same(stored.sample_per_class(20, seed=3), ref.sample_per_class(20, seed=3))
    for args in (('6', 0), ('2', [1, 3], [2.0, -1.0]), ('0', 5)):
        for kw in ({}, {'classes': ['b', 'e'], 'k': 30}):
            assert exemplary_images(stored, *args, **kw).equals(exemplary_images(ref, *args, **kw))
    assert_same(SignalSet.load(stored.save(tmp_path/'a.npz')), SignalSet.load(ref.save(tmp_path/'b.npz')))
    assert_same(SignalSet.open(stored.store), ref)
    from convsvd.hypergraphs import significance               # what takes a SignalSet takes a stored one
    for q in (0.5, 0.85): assert significance(stored, '2', q).equals(significance(ref, '2', q))


@st.composite
def value_arrays(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 400))
    kind = draw(st.sampled_from(['normal', 'ties', 'special']))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == 'normal': a = rng.normal(size=n) * 10.0 ** draw(st.integers(-30, 30))
    elif kind == 'ties': a = rng.integers(-3, 4, n).astype(float)
    else: a = rng.choice([0.0, -0.0, np.inf, -np.inf, 1e-39, -1e-39, 5e-324, 3.4e38, -2.5], n)
    with np.errstate(over='ignore'): a = a.astype(dtype)
    return a, draw(st.integers(1, 64)), draw(st.lists(st.floats(0, 1), min_size=1, max_size=6))


@given(value_arrays())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_stream_quantile_is_numpys(case):
    "The store's quantile (two 16-bit histogram passes over blocks) is np.quantile of the whole array, bit for bit."
    a, step, qs = case
    with np.errstate(invalid='ignore', over='ignore'): ref = np.quantile(a, np.asarray(qs))
    got = S._stream_quantile(lambda: (a[s:s + step] for s in range(0, len(a), step)), a.size, a.dtype, np.asarray(qs))
    assert np.array_equal(got, ref, equal_nan=True), (got, ref)


def test_memory_bounded_by_a_chunk(tmp_path):
    "On a store, the methods hold one chunk (or one class) at a time: their peak memory does not grow with the images."
    def peak(fn):
        "The least of two measures of fn's peak allocation above what was allocated before (other threads add noise)."
        out = []
        for _ in range(2):
            tracemalloc.start(); base = tracemalloc.get_traced_memory()[0]; tracemalloc.reset_peak()
            try: fn(); out.append(tracemalloc.get_traced_memory()[1] - base)
            finally: tracemalloc.stop()
        return min(out)
    torch.manual_seed(0)
    model, r, peaks = nn.Sequential(nn.Linear(64, 64)), 64, {}
    for n in (4096, 32768):
        data = TensorDataset(torch.randn(n, 64), torch.arange(n) % 8)   # classes interleaved
        ss = collect_signals(model, data, store=tmp_path/f'{n}.zarr', chunk=256, batch_size=256, progress=False)
        layer_bytes, class_bytes = n * r * 4, n // 8 * r * 4
        ops = {'quantile': lambda: ss.quantile('0', [0.5, 0.9]), 'class_means': lambda: ss.class_means('0'),
               'exemplary_images': lambda: exemplary_images(ss, '0', [0, 3], k=10),
               'iter_rows': lambda: sum(float(b[0, 0]) for _, b in ss.iter_rows('0')),
               'sample_per_class': lambda: ss.sample_per_class(10), 'whole layer': lambda: ss['0']}
        peaks[n] = {k: peak(fn) for k, fn in ops.items()}
        assert peaks[n]['whole layer'] >= layer_bytes                   # the measure sees a layer when one is read
        assert peak(lambda: ss.class_rows('0', 3)) < 2 * class_bytes + 2**20
        assert peak(lambda: [len(v) for _, v in ss.iter_classes('0', max_bytes=class_bytes)]) < 3 * class_bytes + 2**20
    for k in peaks[4096]:
        if k != 'whole layer': assert peaks[32768][k] < min(peaks[4096][k] + 2**20, 32768 * r * 4 / 2), (k, peaks)


CHILD = '''
import sys, torch
sys.path.insert(0, {tests!r})
from signal_cases import Images, tiny_model, CHUNK, BATCH
from convsvd.signals import collect_signals
torch.set_num_threads(1)
collect_signals(tiny_model(), Images(wait_at=100), store={store!r}, chunk=CHUNK, batch_size=BATCH, progress=False)  # waits until killed
print('finished')
'''


def done_chunks(path:Path)->int:
    try: return int((zarr.open_group(str(path), mode='r')['done'][:] == 1).sum())
    except Exception: return 0


def test_sigkill_then_resume(tmp_path, stored):
    "SIGKILL loses at most the chunk in flight; a live writer is refused; the rerun takes the lock over, computes only "
    "the missing images, and the store equals an uninterrupted one bit for bit."
    path = tmp_path/'killed.zarr'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get('PYTHONPATH', '')]), OMP_NUM_THREADS='1')
    child = subprocess.Popen([sys.executable, '-c', CHILD.format(tests=str(HERE), store=str(path))], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while done_chunks(path) < 3:                  # chunks 0-2 written, the child waits in chunk 3
            assert child.poll() is None, child.communicate()
            assert time.time() - t0 < 600, 'the child wrote no chunk'
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match=rf"being written by another run \(pid {child.pid} on host"):
            collect_signals(tiny_model(), Images(), store=path, chunk=CHUNK, batch_size=BATCH, progress=False)
        with pytest.raises(ValueError, match='is not finished'): SignalSet.open(path)
    finally:
        child.send_signal(signal.SIGKILL); child.communicate()
    done = done_chunks(path)
    assert done == 3                                  # chunk 3 was in flight: lost
    model = tiny_model()
    with pytest.warns(UserWarning, match=rf"taking over the lock of a run that is gone \(its writer, pid {child.pid}, is no longer running\)"):
        resumed, seen = images_seen(model, lambda: collect_signals(model, Images(), store=path, chunk=CHUNK, batch_size=BATCH, progress=False))
    assert seen == N - done * CHUNK
    assert_same(resumed, stored)
    assert files(path, relative=True) == files(stored.store, relative=True)     # every chunk file, bit for bit


class Interrupted(Images):
    "Ctrl-C when image `at` is read."
    def __init__(self, at=None): super().__init__(); self.at = at
    def __getitem__(self, i):
        if i == self.at: raise KeyboardInterrupt
        return super().__getitem__(i)


def test_reuse_overwrite_and_progress(tmp_path, stored, monkeypatch):
    "A finished store is reused; overwrite=True starts again; the progress bar counts images, from the done ones on resume."
    bars = []
    class Bar:
        def __init__(self, *a, **kw): self.kw, self.n, self.total = kw, kw.get('initial', 0), kw.get('total'); bars.append(self)
        def update(self, k): self.n += k
        def __enter__(self): return self
        def __exit__(self, *a): pass
    monkeypatch.setattr(S, 'tqdm', Bar)
    path, model = tmp_path/'p.zarr', tiny_model()
    with pytest.raises(KeyboardInterrupt):
        collect_signals(model, Interrupted(at=100), store=path, chunk=CHUNK, batch_size=BATCH)
    assert done_chunks(path) == 3 and bars[-1].n == 96 and bars[-1].total == N
    for m in model.modules(): assert not m._forward_hooks
    ss, seen = images_seen(model, lambda: collect_signals(model, Interrupted(), store=path, batch_size=BATCH))
    assert seen == N - 96 and bars[-1].kw['initial'] == 96 and bars[-1].n == N and bars[-1].kw['unit'] == 'img'
    assert_same(ss, stored)
    before = files(path)
    again, seen = images_seen(model, lambda: collect_signals(model, Interrupted(), store=path, batch_size=BATCH))
    assert seen == 0 and files(path) == before
    fresh, seen = images_seen(model, lambda: collect_signals(model, Interrupted(), store=path, batch_size=BATCH, overwrite=True))
    assert seen == N + 1 and fresh.store == path        # + the one image that checks the layers before the store is made
    assert_same(fresh, stored)


def test_refuses_to_mix_runs(stored, tmp_path):
    "Another model, dataset, layer list or chunk size is refused with what differs, and the store is left as it was."
    before = files(stored.store)
    other = tiny_model(); other[0].weight.data[0, 0, 0, 0] += 1e-3
    cases = {'holds the signals of another model': lambda: collect_signals(other, Images(), store=stored.store),
             'another dataset \\(300 images': lambda: collect_signals(tiny_model(), Images(n=299), store=stored.store),
             'another dataset': lambda: collect_signals(tiny_model(), Subset(Images(n=301), range(1, 301)), store=stored.store),
             "holds layers all; this call asks for \\['0'\\]": lambda: collect_signals(tiny_model(), Images(), layers='0', store=stored.store),
             'chunks of 32 images; this call asks for chunk=64': lambda: collect_signals(tiny_model(), Images(), chunk=64, store=stored.store)}
    for msg, fn in cases.items():
        with pytest.raises(ValueError, match=msg) as e: fn()
        assert str(stored.store) in str(e.value) and 'overwrite=True' in str(e.value)
    assert files(stored.store) == before
    (tmp_path/'foreign').mkdir(); (tmp_path/'foreign'/'notes.txt').write_text('mine')
    (tmp_path/'file.npz').write_bytes(b'PK')
    for where, msg in (('foreign', 'exists and is not a convsvd signal store'), ('file.npz', 'SignalSet .npz file')):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=msg): collect_signals(tiny_model(), Images(), store=tmp_path/where, overwrite=overwrite)
    assert (tmp_path/'foreign'/'notes.txt').read_text() == 'mine'
    with pytest.raises(TypeError, match='must read it in order'):
        collect_signals(tiny_model(), DataLoader(Images(), batch_size=8, shuffle=True), store=tmp_path/'x')
    with pytest.raises(TypeError, match='needs a Dataset with len'):
        collect_signals(tiny_model(), [(torch.randn(2, 3, 12, 12), torch.zeros(2, dtype=torch.long))], store=tmp_path/'y')
    with pytest.raises(ValueError, match='chunk must be a positive number'): collect_signals(tiny_model(), Images(), store=tmp_path/'z', chunk=0)
    with pytest.raises(FileNotFoundError): SignalSet.open(tmp_path/'none')
    with pytest.raises(ValueError, match='not a convsvd signal store'): SignalSet.open(tmp_path/'foreign')


def test_dataloader_and_one_batch_per_chunk(tmp_path, ref):
    "A DataLoader's batch size and collate function are kept; chunks need not be a multiple of the batch size; the global "
    "RNG is untouched."
    torch.manual_seed(5); state = torch.get_rng_state()
    ss = collect_signals(tiny_model(), DataLoader(Images(), batch_size=BATCH), store=tmp_path/'dl.zarr', chunk=CHUNK, progress=False)
    assert_same(ss, ref)
    odd = collect_signals(tiny_model(), Images(), store=tmp_path/'odd.zarr', chunk=50, batch_size=16, progress=False)
    for k in ref.layers: np.testing.assert_allclose(odd[k], ref[k], rtol=1e-5, atol=1e-6 * np.abs(ref[k]).max())
    assert torch.equal(torch.get_rng_state(), state)


def test_full_disk_keeps_what_was_written(tmp_path, stored, monkeypatch):
    "A full disk: a clear error naming the store; the chunks already written are kept and a rerun completes the store."
    from zarr.storage import LocalStore
    real, writes = LocalStore.set, []
    async def full(self, key, value):
        if key.startswith('layers/0/c/'):
            writes.append(key)
            if len(writes) > 4: raise OSError(errno.ENOSPC, 'No space left on device')
        return await real(self, key, value)
    monkeypatch.setattr(LocalStore, 'set', full)
    path = tmp_path/'full.zarr'
    with pytest.raises(OSError, match=r"cannot write chunk 4 to the signal store .*full\.zarr: the disk is full .*chunks already written are kept: free some space"):
        collect_signals(tiny_model(), Images(), store=path, chunk=CHUNK, batch_size=BATCH, progress=False)
    assert done_chunks(path) == 4
    monkeypatch.setattr(LocalStore, 'set', real)
    model = tiny_model()
    ss, seen = images_seen(model, lambda: collect_signals(model, Images(), store=path, chunk=CHUNK, batch_size=BATCH, progress=False))
    assert seen == N - 4 * CHUNK
    assert_same(ss, stored)


READ_ONLY = '''
import sys
sys.path.insert(0, {tests!r})
from signal_cases import Images, tiny_model
from convsvd.signals import SignalSet, collect_signals
ss = collect_signals(tiny_model(), Images(), store={done!r}, progress=False)     # finished: reused, nothing written
print('reused', len(ss), float(ss.quantile('6', 0.9)) == float(SignalSet.open({done!r}).quantile('6', 0.9)))
for where in ({partial!r}, {new!r}):
    try: collect_signals(tiny_model(), Images(), store=where, progress=False)
    except OSError as e: print('refused', e)
'''


def _drop_dac_override():
    "In a child about to exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set (prctl PR_CAPBSET_DROP)."
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0: raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='file modes and capabilities as on Linux')
def test_read_only_store(tmp_path, stored):
    "A finished store on a read-only disk is reused; writing a store there is refused with the path and what to do."
    ro = Path(tempfile.mkdtemp(prefix='convsvd-ro-'))
    try:
        shutil.copytree(stored.store, ro/'done.zarr')
        with pytest.raises(KeyboardInterrupt):
            collect_signals(tiny_model(), Interrupted(at=100), store=ro/'partial.zarr', chunk=CHUNK, batch_size=BATCH, progress=False)
        (ro/'partial.zarr'/'writer.lock').unlink()
        before = files(ro/'partial.zarr')
        for p in [ro, *ro.rglob('*')]: p.chmod(0o555 if p.is_dir() else 0o444)
        code = READ_ONLY.format(tests=str(HERE), done=str(ro/'done.zarr'), partial=str(ro/'partial.zarr'), new=str(ro/'new.zarr'))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get('PYTHONPATH', '')]), HOME=str(ro),
                   MPLCONFIGDIR=tempfile.gettempdir(), OMP_NUM_THREADS='1')
        honour_modes = _drop_dac_override if os.geteuid() == 0 else None   # root ignores file modes unless it drops that right
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, preexec_fn=honour_modes, timeout=600)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == f'reused {N} True'
        for line, name in zip(lines[1:], ('partial.zarr', 'new.zarr')):
            assert line.startswith('refused') and f"{ro/name}" in line and 'read-only' in line and 'writable' in line, line
        assert len(lines) == 3 and files(ro/'partial.zarr') == before and not (ro/'new.zarr').exists()
    finally:
        for p in [ro, *ro.rglob('*')]: p.chmod(0o755)
        shutil.rmtree(ro)


def test_damaged_chunks_named_and_repaired(tmp_path, stored):
    "A corrupted or missing chunk: the error names its file; verify=True recomputes those chunks only."
    path = tmp_path/'damaged.zarr'
    shutil.copytree(stored.store, path)
    bad = path/'layers'/'1'/'c'/'6'/'0'
    b = bytearray(bad.read_bytes()); b[len(b) // 2] ^= 0x10; bad.write_bytes(bytes(b))
    (path/'labels'/'c'/'2').unlink()                                  # a chunk file lost
    ss = SignalSet.open(path)
    for fn in (lambda: ss['2'], lambda: ss.class_means('2'), lambda: ss.quantile('2', 0.5), lambda: ss.class_rows('2', 1)):
        with pytest.raises(ValueError, match=rf"is damaged: chunk 6 of layer '2' \({bad}\) cannot be read .*verify=True"): fn()
    np.testing.assert_array_equal(ss['0'], stored['0'])                # the other layers read fine
    model = tiny_model()
    with pytest.warns(UserWarning, match=r"2 damaged chunk\(s\) \(2, 6\) are recomputed"):
        fixed, seen = images_seen(model, lambda: collect_signals(model, Images(), store=path, verify=True, progress=False))
    assert seen == 2 * CHUNK
    assert_same(fixed, stored)


def test_two_writers_on_one_store(tmp_path):
    "A second run on a store that a live run (another thread here) writes is refused, naming the writer."
    path, tried, errors = tmp_path/'t.zarr', threading.Event(), []
    def first():
        try: collect_signals(tiny_model(), Images(wait_at=100, until=tried.is_set), store=path, chunk=CHUNK, batch_size=BATCH, progress=False)
        except BaseException as e: errors.append(e)
    t = threading.Thread(target=first); t.start()
    try:
        t0 = time.time()
        while done_chunks(path) < 3: assert time.time() - t0 < 300 and t.is_alive(); time.sleep(0.02)
        with pytest.raises(RuntimeError, match=rf"{path} is being written by another run \(pid {os.getpid()}"):
            collect_signals(tiny_model(), Images(), store=path, chunk=CHUNK, batch_size=BATCH, progress=False)
    finally: tried.set(); t.join()
    assert not errors and SignalSet.open(path).layers == ['0', '2', '6']

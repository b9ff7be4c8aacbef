"""Tests for convsvd.models: the default model, its evaluation and training, and the datasets."""
import os, pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from convsvd.models import (MnistNet, asset_path, cifar10_dataset, default_model, default_transform, digits_dataset,
                            evaluate, image_folder, train_digits_model)
from convsvd.core import linear_layers, model_device


def n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
    with pytest.raises(TypeError, match='a batch must be images'):
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
    with pytest.raises(ValueError, match='train_data: data is empty'):
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

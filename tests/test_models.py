"""Tests for convsvd.models: the default model, its evaluation and training, and the datasets."""
import os, pickle, re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from convsvd.models import (MnistNet, asset_path, check_image_folder, cifar10_dataset, default_model, default_transform,
                            digits_dataset, evaluate, image_folder, imagenet_class_map, imagenet_class_names,
                            imagenet_classes, imagenet_index, map_labels, read_class_map, train_digits_model)
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


# ---------------------------------------------------------------- checking image folders before a long run
def write_images(root, spec, seed=0):
    "root/<class>/<name>: random RGB PNGs of the given (h, w); spec = {class: [(name, h, w), ...]}."
    from PIL import Image
    rng = np.random.default_rng(seed)
    for cls, files in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, h, w in files:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / name)
    return root


def test_check_image_folder_names_bad_files_and_sizes(tmp_path):
    write_images(tmp_path, {'a': [('0.png', 40, 60), ('1.png', 40, 60)], 'b': [('0.png', 50, 30), ('big.png', 90, 120)]})
    good = (tmp_path / 'a' / '0.png').read_bytes()
    (tmp_path / 'b' / 'cut.png').write_bytes(good[:len(good) // 2])      # truncated
    (tmp_path / 'a' / 'fake.jpg').write_bytes(b'\xff\xd8\xff garbage')   # not an image
    (tmp_path / 'a' / 'readme.txt').write_text('ignored')
    fc = check_image_folder(tmp_path, workers=2)
    assert fc.classes == ['a', 'b'] and fc.counts == {'a': 2, 'b': 2} and fc.n_images == 4 and fc.ignored == 1
    assert sorted((Path(p).relative_to(tmp_path).as_posix(), why) for p, why in fc.bad) == [
        ('a/fake.jpg', 'not an image file PIL can identify'), ('b/cut.png', 'image file is truncated')]
    assert fc.sizes == {(60, 40): 2, (30, 50): 1, (120, 90): 1} and fc.modes == {'RGB': 4}
    assert fc.mixed and fc.default_size == 30                                # the smallest shorter side
    assert fc.bad_message().startswith('2 of 6 image files in') and 'b/cut.png (image file is truncated)' in fc.bad_message()
    assert 'a/fake.jpg' in fc.bad_message(n=2) and '1 more' in fc.bad_message(n=1)
    with pytest.raises(ValueError, match=r"2 of 6 image files .*cannot be read: .*bad='skip'"):
        image_folder(tmp_path)
    ds = image_folder(tmp_path, bad='skip')                                  # mixed sizes: the default resize, batches stack
    assert ds.size == 30 and ds.check is not None and len(ds) == 4
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 3, 30, 30) and yb.tolist() == [0, 0, 1, 1]
    ds = image_folder(tmp_path, size=16, bad='skip', normalize=((0.5,) * 3, (0.5,) * 3))
    assert ds.size == 16 and ds[0][0].shape == (3, 16, 16) and float(ds[0][0].min()) < 0
    assert image_folder(tmp_path, size=12, channels=1, bad='skip')[0][0].shape == (1, 12, 12)
    with pytest.raises(ValueError, match="bad must be 'raise' or 'skip'"):
        image_folder(tmp_path, bad='ignore')


def test_check_image_folder_cap_and_same_sizes(tmp_path):
    write_images(tmp_path, {'x': [('0.png', 300, 400)], 'y': [('0.png', 260, 500)]})
    fc = check_image_folder(tmp_path)
    assert fc.bad == [] and fc.mixed and fc.default_size == 224              # capped at 224
    same = write_images(tmp_path / 'same', {'x': [('0.png', 20, 30)], 'y': [('0.png', 20, 30)]})
    fc = check_image_folder(same)
    assert not fc.mixed and fc.default_size is None and image_folder(same).size is None
    assert image_folder(same)[0][0].shape == (3, 20, 30)                     # no resize when all sizes agree


def test_check_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        check_image_folder(tmp_path / 'nowhere')
    (tmp_path / 'f.png').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='is a file, not a folder'):
        check_image_folder(tmp_path / 'f.png')
    with pytest.raises(FileNotFoundError, match='has no class sub-folder'):
        check_image_folder(tmp_path)
    write_images(tmp_path, {'full': [('0.png', 8, 8)]}); (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='empty .* hold no image file'):
        check_image_folder(tmp_path)


# ---------------------------------------------------------------- ImageNet classes and class maps
def test_imagenet_classes_shipped_and_indexed():
    from torchvision.models._meta import _IMAGENET_CATEGORIES
    t = imagenet_classes()
    assert len(t) == 1000 and imagenet_class_names() == list(_IMAGENET_CATEGORIES)
    assert t['wnid'].is_unique and t['wnid'].tolist() == sorted(t['wnid'])
    assert (asset_path('imagenet_classes.NOTICE.txt').read_text().count('License') >= 2)
    for i in range(1000):                                      # every id and every torchvision name finds its output
        assert imagenet_index(t['wnid'][i]) == i and imagenet_index(t['name'][i]) == i
    assert imagenet_index('great_white_shark') == imagenet_index('Great White Shark') == imagenet_index('man-eater') == 2
    with pytest.raises(KeyError, match='several ImageNet classes'):
        imagenet_index('CARDIGAN')
    with pytest.raises(KeyError, match='not an ImageNet class name or WordNet id; close matches'):
        imagenet_index('tabbby')
    t.loc[0, 'name'] = 'changed'                               # a copy: the shipped table is untouched
    assert imagenet_class_names()[0] == 'tench'


def test_imagenet_class_map_and_labels(tmp_path):
    write_images(tmp_path, {'n02123045': [('0.png', 8, 8)], 'Egyptian_cat': [('0.png', 8, 8), ('1.png', 8, 8)],
                            'espresso': [('0.png', 8, 8)]})
    ds = image_folder(tmp_path)
    m = imagenet_class_map(ds.classes)
    assert m == {'Egyptian_cat': 285, 'espresso': 967, 'n02123045': 281}
    mapped = map_labels(ds)
    assert [mapped[i][1] for i in range(len(ds))] == [m[ds.classes[ds[i][1]]] for i in range(len(ds))]
    assert mapped.targets == [m[ds.classes[t]] for t in ds.targets] and len(mapped.classes) == 1000
    assert mapped.classes[285] == 'Egyptian cat'
    from convsvd.core import class_names
    assert class_names(mapped, 968) == imagenet_class_names()  # the core reads the output names
    with pytest.raises(KeyError, match='1 of 2 classes are not ImageNet classes'):
        imagenet_class_map(['espresso', 'my holiday'])
    assert imagenet_class_map(['espresso', 'my holiday'], strict=False) == {'espresso': 967}
    own = map_labels(ds, {'Egyptian_cat': 1, 'espresso': 0, 'n02123045': 2})
    assert own.classes == ['espresso', 'Egyptian_cat', 'n02123045'] and own[0][1] == 1
    with pytest.raises(ValueError, match='no output for class'):
        map_labels(ds, {'espresso': 0})
    with pytest.raises(ValueError, match='outside the 2 outputs'):
        map_labels(ds, {'Egyptian_cat': 1, 'espresso': 0, 'n02123045': 2}, classes=['a', 'b'])


def test_read_class_map(tmp_path):
    classes = ['cat', 'cup']
    j = tmp_path / 'm.json'; j.write_text('{"cat": "tabby", "cup": 504}')
    c = tmp_path / 'm.csv'; c.write_text('folder,output\ncat,281\ncup,coffee mug\n')
    t = tmp_path / 'm.tsv'; t.write_text('cat\tn02123045\ncup\t504\n')
    for f in (j, c, t):
        assert read_class_map(f, classes, n_outputs=1000) == {'cat': 281, 'cup': 504}, f
    cases = [('{"cat": 281', '.json', 'not valid JSON'), ('["cat"]', '.json', 'expected a JSON object'),
             ('{"cat": 1.5, "cup": 2}', '.json', "key 'cat': expected an output index"),
             ('cat,281,extra\n', '.csv', 'line 1: expected 2 columns'), ('cat,1\ncat,2\n', '.csv', "'cat' appears twice"),
             ('cat,1\ncup,-3\n', '.csv', "line 2: '-3' is not an ImageNet class"), ('cat,1\ncup,2\n', '.txt', "expected a .json, .csv or .tsv"),
             ('cat,1\ncup,2000\n', '.csv', 'output index 2000 is outside 0..999'),
             ('cat,1\n', '.csv', "no output for class(es) 'cup'"), ('cat,1\ncup,2\ndog,3\n', '.csv', "names 'dog', not a class")]
    for text, suffix, msg in cases:
        f = tmp_path / f'bad{suffix}'; f.write_text(text)
        with pytest.raises(ValueError, match=re.escape(msg)):
            read_class_map(f, classes, n_outputs=1000)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_class_map(tmp_path / 'none.json')
    with pytest.raises(FileNotFoundError, match='is a folder'):
        read_class_map(tmp_path)

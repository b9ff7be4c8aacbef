"Tests of convsvd.featurevis: objectives against direct formulas, the optimisation loop's guarantees, bad input."
import copy, math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from convsvd.featurevis import (Compose, ImageParam, Jitter, Objective, Pad, RandomRotate, RandomScale, Visualization,
                                channel, direction, diversity, neuron, objective_values, similarity_overlay,
                                singular_vector, singular_vectors, standard_transforms, visualize)
from convsvd.matrization import layer_svd, receptive_fields
from convsvd.core import capture
from convsvd.models import default_model

FAST = dict(progress=False, transforms=None)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Small renders: one thread avoids oversubscribing a shared CPU (restored after this module)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def net():
    return default_model()


def small_net(inplace=True, seed=0):
    "Grouped, strided, padded convolutions with biases and an in-place ReLU after the first."
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2), nn.ReLU(inplace=inplace),
                         nn.Conv2d(6, 5, 3), nn.ReLU(inplace=inplace), nn.Flatten(), nn.LazyLinear(3)).eval()


def direct_signals(model, layer_name, x):
    "sum over positions of s_i v_i^T Psi(X_L) for every i: (B, r), from receptive_fields and layer_svd only."
    layer = dict(model.named_modules())[layer_name]
    with torch.no_grad(), capture(model, [layer_name], what='input') as acts: model(x)
    X = acts[layer_name]
    svd = layer_svd(layer)
    if isinstance(layer, nn.Linear): return (svd.S * (X @ svd.dense_Vh().T)).double()
    psi = receptive_fields(X, layer)                       # (B, c k^2, L)
    return svd.signals(psi).sum(-1).double()                # (B, r)


def test_singular_vector_equals_direct_formula(net):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for layer in ['conv1', 'conv2', 'fc1', 'fc2']:
        ref = direct_signals(net, layer, x)
        got = objective_values(net, singular_vector(layer, [0, 1, 2]), x)
        np.testing.assert_allclose(got, ref[[0, 1, 2], [0, 1, 2]].numpy(), rtol=1e-4, atol=1e-3 * ref.abs().max().item())
        one = objective_values(net, singular_vector(layer, 4), x)        # one index: the same vector for every image
        np.testing.assert_allclose(one, ref[:, 4].numpy(), rtol=1e-4, atol=1e-3 * ref.abs().max().item())
        w = torch.linspace(-1, 1, layer_svd(dict(net.named_modules())[layer]).rank, dtype=torch.float64)
        got = objective_values(net, singular_vectors(layer, w.numpy()), x)  # eq. 20 with one weight per vector
        np.testing.assert_allclose(got, (ref @ w).numpy(), rtol=1e-4, atol=1e-3 * ref.abs().max().item())
        got = objective_values(net, singular_vectors(layer, {1: 2.0, 3: -0.5}), x)
        np.testing.assert_allclose(got, (2 * ref[:, 1] - 0.5 * ref[:, 3]).numpy(), rtol=1e-4, atol=1e-3 * ref.abs().max().item())


def test_grouped_strided_layer_and_visualize_history():
    m = small_net()
    m(torch.zeros(1, 4, 16, 16))                                 # materialise the lazy layer
    x = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = direct_signals(m, '0', x)
    got = objective_values(m, singular_vector('0', [5, 0]), x)
    np.testing.assert_allclose(got, ref[[0, 1], [5, 0]].numpy(), rtol=1e-5, atol=1e-5)
    # the loop's own value (history, step 0, no transforms, lr 0) is the same formula on the returned images
    r = visualize(m, singular_vector('0', [5, 0]), image_size=16, channels=4, steps=1, lr=0.0, **FAST)
    ref = direct_signals(m, '0', r.images)
    np.testing.assert_allclose(r.history[['image 0', 'image 1']].iloc[0].to_numpy(), ref[[0, 1], [5, 0]].numpy(), rtol=1e-5, atol=1e-5)


def test_pre_activation_despite_inplace_relu():
    m = small_net(inplace=True)
    m(torch.zeros(1, 4, 16, 16))
    # the zero-weight term on layer '2' forces the forward pass through the in-place ReLU that follows layer '0'
    obj = singular_vector('0', [0, 1]) + 0 * channel('2', 0)
    r = visualize(m, obj, image_size=16, channels=4, steps=1, lr=0.0, **FAST)
    conv = m[0]
    x = r.images
    Y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    U = layer_svd(conv).U
    pre = torch.stack([((Y[b] - conv.bias[:, None, None]).flatten(1).sum(1) @ U[:, b]) for b in range(2)])
    post = torch.stack([((Y[b].relu() - conv.bias[:, None, None]).flatten(1).sum(1) @ U[:, b]) for b in range(2)])
    got = torch.tensor(r.history[['image 0', 'image 1']].iloc[0].to_numpy())
    torch.testing.assert_close(got, pre.double(), rtol=1e-5, atol=1e-5)
    assert (got - post.double()).abs().max() > 1e-3          # the post-ReLU value would differ
    np.testing.assert_allclose(objective_values(m, obj, x), got.numpy(), rtol=1e-5, atol=1e-5)


def test_euclidean_terms_and_diversity_against_direct_formulas(net):
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    Y = F.conv2d(F.relu(net.conv1(x)), net.conv2.weight, net.conv2.bias).detach().double()
    np.testing.assert_allclose(objective_values(net, channel('conv2', 7), x), Y[:, 7].mean((1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(objective_values(net, channel('conv2', [1, 2, 3, 4]), x),
                               Y[[0, 1, 2, 3], [1, 2, 3, 4]].mean((1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(objective_values(net, neuron('conv2', 3), x), Y[:, 3, 12, 12].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objective_values(net, neuron('conv2', 3, x=5, y=20), x), Y[:, 3, 20, 5].numpy(), rtol=1e-5, atol=1e-6)
    v = torch.randn(64, dtype=torch.float64)
    np.testing.assert_allclose(objective_values(net, direction('conv2', v), x), (Y.sum((2, 3)) @ v).numpy(), rtol=1e-5, atol=1e-4)
    # Lucid's diversity, written out with loops: minus the summed cosine similarity of the Gram matrices of distinct images
    Fl = Y.flatten(2)
    G = [(f @ f.T) / (f @ f.T).norm() for f in Fl]
    lucid = -sum((G[i] * G[j]).sum() for i in range(4) for j in range(4) if i != j) / 4
    np.testing.assert_allclose(objective_values(net, diversity('conv2'), x).sum(), lucid.item(), rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), i=st.integers(0, 8), j=st.integers(0, 31))
def test_objective_algebra_is_linear(a, b, i, j):
    net = _NET
    x = _X
    s, c = singular_vector('conv1', i), channel('conv1', j)
    vs, vc = objective_values(net, s, x), objective_values(net, c, x)
    np.testing.assert_allclose(objective_values(net, a * s + c * b, x), a * vs + b * vc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(objective_values(net, s - c, x), vs - vc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(objective_values(net, -s / 2, x), -vs / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(objective_values(net, sum([s, c, s]), x), 2 * vs + vc, rtol=1e-5, atol=1e-5)

_NET = default_model()
_X = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def test_short_optimisation_increases_the_objective(net):
    for layer in ['conv2', 'fc1']:
        obj = singular_vector(layer, [0, 3])
        before = visualize(net, obj, image_size=28, channels=1, steps=0, progress=False)
        after = visualize(net, obj, image_size=28, channels=1, steps=24, progress=False)
        v0, v1 = objective_values(net, obj, before.images), objective_values(net, obj, after.images)
        assert (v1 > v0).all(), (layer, v0, v1)
        assert after.history['total'].iloc[-4:].mean() > after.history['total'].iloc[:4].mean()
        neg = visualize(net, -obj, image_size=28, channels=1, steps=24, progress=False)   # the negative lowers it
        assert (objective_values(net, obj, neg.images) < v0).all()


def test_same_seed_same_images(net):
    kw = dict(image_size=28, channels=1, steps=6, progress=False)
    a = visualize(net, singular_vector('conv2', [0, 1]), seed=3, **kw)
    b = visualize(net, singular_vector('conv2', [0, 1]), seed=3, **kw)
    c = visualize(net, singular_vector('conv2', [0, 1]), seed=4, **kw)
    assert torch.equal(a.images, b.images) and a.history.equals(b.history)
    assert not torch.equal(a.images, c.images)
    assert a.seed == 3 and a.settings['seed'] == 3
    p = visualize(net, channel('conv2', 0), param='pixel', valid='clamp', seed=3, **kw)
    q = visualize(net, channel('conv2', 0), param='pixel', valid='clamp', seed=3, **kw)
    assert torch.equal(p.images, q.images) and 0 <= p.images.min() and p.images.max() <= 1


def test_gradients_only_reach_the_image_and_model_is_restored():
    m = default_model()
    m.conv1.weight.requires_grad_(False)                         # a user's own freezing must survive
    m.train()
    m.fc2.eval()
    before = copy.deepcopy(m.state_dict())
    flags = {n: mod.training for n, mod in m.named_modules()}
    req = {n: p.requires_grad for n, p in m.named_parameters()}
    seen = {}
    def spy(module, args, out): seen['requires_grad'] = [p.requires_grad for p in m.parameters()]; seen['training'] = m.training
    h = m.conv2.register_forward_hook(spy)
    try: r = visualize(m, singular_vector('conv2', 0) + neuron('fc1', 3), image_size=28, channels=1, steps=3, progress=False)
    finally: h.remove()
    assert seen['requires_grad'] == [False] * len(seen['requires_grad']) and seen['training'] is False
    assert all(p.grad is None for p in m.parameters())
    assert {n: p.requires_grad for n, p in m.named_parameters()} == req
    assert {n: mod.training for n, mod in m.named_modules()} == flags
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
    assert not r.images.requires_grad and r.images.shape == (1, 1, 28, 28)


def test_batchnorm_model_in_training_mode_is_untouched():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).train()
    stats = [t.clone() for t in (m[1].running_mean, m[1].running_var)]
    visualize(m, singular_vector('3', [0, 1]), image_size=16, steps=3, progress=False)
    assert m.training and m[1].training
    assert torch.equal(m[1].running_mean, stats[0]) and torch.equal(m[1].running_var, stats[1])
    assert m[1].num_batches_tracked.item() == 0


def test_forward_stops_at_the_deepest_target_layer():
    class Boom(nn.Module):
        def forward(self, x): raise AssertionError('the forward pass should have stopped before this module')
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3), Boom())
    r = visualize(m, singular_vector('2', 1) - 0.5 * channel('0', 2), image_size=20, steps=2, progress=False)
    assert r.history.shape == (2, 2)
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


def test_batched_objectives_one_image_each(net):
    r = visualize(net, singular_vector('fc1', [0, 1, 2]) + 10 * diversity('fc1'), image_size=28, channels=1, steps=4, progress=False)
    assert r.images.shape == (3, 1, 28, 28) and list(r.history.columns) == ['image 0', 'image 1', 'image 2', 'total']
    r = visualize(net, singular_vectors('conv2', [{0: 1, 5: 1}, {2: 1}]), image_size=28, channels=1, steps=2, progress=False)
    assert r.images.shape == (2, 1, 28, 28)
    r = visualize(net, channel('conv2', 1), batch=2, image_size=28, channels=1, steps=2, progress=False)
    assert r.images.shape == (2, 1, 28, 28)


def test_bad_input(net):
    kw = dict(image_size=28, channels=1, steps=1, progress=False)
    with pytest.raises(KeyError, match="'conv3' not found.*close matches: conv2, conv1"):
        visualize(net, singular_vector('conv3', 0), **kw)
    with pytest.raises(KeyError, match="'fc3' not found; close matches: fc"):
        visualize(net, channel('fc3', 0), **kw)
    with pytest.raises(KeyError, match="'relu1' is a ReLU"):
        visualize(net, singular_vector('relu1', 0), **kw)
    with pytest.raises(ValueError, match="index 64 is beyond the rank of layer 'conv2': it has 64 singular vectors"):
        visualize(net, singular_vector('conv2', [0, 64]), **kw)
    with pytest.raises(ValueError, match="index 9 is beyond the rank of layer 'conv1': it has 9 singular vectors"):
        visualize(net, singular_vector('conv1', 9), **kw)     # conv1: 32 filters on 9-dimensional receptive fields
    with pytest.raises(ValueError, match="weights has length 3 but layer 'fc1' has 128 singular vectors"):
        visualize(net, singular_vectors('fc1', [1.0, 2.0, 3.0]), **kw)
    with pytest.raises(ValueError, match="channel 70 is out of range for layer 'conv2' with 64 channels"):
        visualize(net, channel('conv2', 70), **kw)
    with pytest.raises(ValueError, match="assigns 3 images .* batch=2"):
        visualize(net, singular_vector('conv2', [0, 1, 2]), batch=2, **kw)
    with pytest.raises(ValueError, match="different numbers of images"):
        singular_vector('conv2', [0, 1]) + channel('conv2', [0, 1, 2])
    with pytest.raises(TypeError, match="int or a non-empty sequence"):
        singular_vector('conv2', 1.5)
    with pytest.raises(TypeError):
        singular_vector('conv2', 0) * singular_vector('conv2', 1)
    # the default model needs exactly 28 x 28 inputs
    with pytest.raises(ValueError, match=r"could not compute \['conv2'\] from a network input of \(1, 20, 20\)"):
        visualize(net, singular_vector('conv2', 0), image_size=20, channels=1, steps=1, progress=False)


def test_input_smaller_than_the_receptive_field():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Conv2d(4, 4, 5)).eval()    # receptive field 9 x 9
    with pytest.raises(ValueError, match=r"network input of \(1, 6, 6\).*smallest square network input from which \['2'\] is computed is 9x9"):
        visualize(m, singular_vector('2', 0), image_size=6, channels=1, transforms=None, steps=2, progress=False)
    r = visualize(m, singular_vector('2', 0), image_size=9, channels=1, transforms=None, steps=2, progress=False)
    assert r.settings['network_input'] == (1, 9, 9)
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules()) and m.training is False


def test_training_mode_is_restored_after_an_error(net):
    m = default_model().train()
    with pytest.raises(ValueError):
        visualize(m, singular_vector('conv2', 0), image_size=20, channels=1, steps=1, progress=False)
    assert all(mod.training for mod in m.modules()) and all(p.requires_grad for p in m.parameters())
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


@settings(max_examples=25, deadline=None)
@given(h=st.integers(6, 20), w=st.integers(6, 20), p=st.integers(0, 4), d=st.integers(1, 4), seed=st.integers(0, 99))
def test_pad_jitter_is_an_exact_crop(h, w, p, d, seed):
    x = torch.rand(3, 2, h, w, generator=torch.Generator().manual_seed(seed))
    y = Compose([Pad(p, value=0.3), Jitter(d)])(x, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    ox, oy = torch.randint(d + 1, (3,), generator=g), torch.randint(d + 1, (3,), generator=g)
    padded = F.pad(x, [p] * 4, value=0.3)
    ref = torch.stack([padded[b, :, oy[b]:oy[b] + h + 2 * p - d, ox[b]:ox[b] + w + 2 * p - d] for b in range(3)])
    assert torch.equal(y, ref)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(6, 200))
def test_standard_transforms_sizes(n):
    ts = standard_transforms(n)
    out = Compose(ts)(torch.rand(2, 3, n, n), torch.Generator().manual_seed(0)).shape[2:]
    if n < 64: assert tuple(out) == (n, n)                       # small images keep their size
    else:
        pad, j1, j2 = ts[0].width, ts[1].d, ts[4].d
        assert tuple(out) == (n + 2 * pad - j1 - j2,) * 2
    if n == 128: assert (ts[0].width, ts[1].d, ts[4].d) == (12, 8, 4)


def test_rotation_and_scale_against_references():
    sq = torch.rand(2, 3, 12, 12)
    r90 = RandomRotate([90], value=0.0)(sq)
    assert min((r90 - torch.rot90(sq, k, dims=(2, 3))).abs().max().item() for k in (1, -1)) < 1e-5
    x = torch.rand(2, 1, 16, 16)
    # zooming in by 2 about the centre samples the centre half of the image
    z = RandomScale([2.0])(x)
    ref = F.interpolate(x[:, :, 4:12, 4:12], scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(z[:, :, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2], atol=1e-5, rtol=0)
    # zooming out fills with the fill value
    zo = RandomScale([0.5], value=0.25)(x)
    assert torch.allclose(zo[:, :, 0, :], torch.tensor(0.25))


def test_fft_parameterisation_is_a_scaled_orthonormal_fft():
    p = ImageParam((2, 3, 9, 10), decorrelate=False, decay_power=0, generator=torch.Generator().manual_seed(0))
    raw = p.raw().detach()
    ref = torch.fft.irfft2(torch.view_as_complex(p.weight.detach()), s=(9, 10), norm='ortho') / 4
    torch.testing.assert_close(raw, ref)
    q = ImageParam((1, 3, 8, 8), param='pixel', generator=torch.Generator().manual_seed(0))
    C = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    C = C / C.norm(dim=0).max()
    torch.testing.assert_close(q.raw().detach(), torch.einsum('ck,bkhw->bchw', C, q.weight.detach()))


def test_similarity_overlay_against_direct_cosine():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()).eval()   # same resolution: no upsampling blur
    img, others = torch.rand(3, 10, 10), torch.rand(2, 3, 10, 10)
    A = m(img[None]).detach()[0]
    Bo = m(others).detach()
    ref = F.cosine_similarity(Bo, A.flatten(1).mean(1)[None, :, None, None], dim=1)
    torch.testing.assert_close(similarity_overlay(m, '1', img, others), ref, atol=1e-5, rtol=0)
    at = similarity_overlay(m, '1', img, img[None], position=(3, 7))
    torch.testing.assert_close(at[0, 3, 7], torch.tensor(1.0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='no spatial positions'):
        similarity_overlay(default_model(), 'fc1', torch.rand(1, 28, 28), torch.rand(2, 1, 28, 28))


def test_visualization_result(net):
    r = visualize(net, singular_vector('conv2', [0, 1]), image_size=28, channels=1, steps=3, progress=False)
    assert isinstance(r, Visualization) and r.numpy().shape == (2, 28, 28, 1)
    assert r.history.shape == (3, 3) and r.settings['network_input'] == (1, 28, 28)
    assert r.settings['transforms'].startswith('Compose([Pad(width=2')
    assert 0 <= r.images.min() and r.images.max() <= 1


def test_plot_helpers_return_figures_without_pyplot_state(net):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from convsvd.featurevis import plot_exemplars, plot_images, plot_similarity
    before = plt.get_fignums()
    r = visualize(net, singular_vector('conv2', [0, 1]), image_size=28, channels=1, steps=2, progress=False)
    others = torch.rand(3, 1, 28, 28)
    figs = [plot_images(r), plot_exemplars(r, [others, others[:2]], titles=['v0', 'v1']),
            plot_similarity(r.images[0], others, similarity_overlay(net, 'relu2', r.images[0], others))]
    assert all(isinstance(f, Figure) for f in figs)
    assert plt.get_fignums() == before
    with pytest.raises(ValueError, match='2 optimised images but 1 sets'):
        plot_exemplars(r, [others])


def test_works_inside_no_grad_and_inference_mode(net):
    with torch.no_grad():
        a = visualize(net, singular_vector('conv2', 0), image_size=28, channels=1, steps=3, progress=False)
    with torch.inference_mode():
        b = visualize(net, singular_vector('conv2', 0), image_size=28, channels=1, steps=3, progress=False)
    c = visualize(net, singular_vector('conv2', 0), image_size=28, channels=1, steps=3, progress=False)
    assert torch.equal(a.images, c.images) and torch.equal(b.images, c.images)


@settings(max_examples=8, deadline=None)
@given(chunk=st.integers(1, 5), seed=st.integers(0, 100))
def test_chunked_render_equals_the_whole_batch(chunk, seed):
    "Splitting the batch into chunks changes the cost, not the result: the whole-batch render is the reference."
    m = small_net(seed=seed)
    m(torch.rand(1, 4, 14, 14))                                           # materialise the LazyLinear (12 + 2*2 - 2 px)
    g = torch.Generator().manual_seed(seed)
    obj = (singular_vector('2', [0, 1, 2, 3, 4]) + 0.5 * channel('0', [5, 4, 3, 2, 1]) - neuron('2', [0, 1, 2, 3, 4])
           + direction('2', torch.randn(5, 5, generator=g)) + singular_vectors('5', torch.rand(5, 3, generator=g)))
    kw = dict(image_size=12, channels=4, steps=3, seed=seed, progress=False, transforms=[Pad(2), Jitter(2)])
    whole, split = visualize(m, obj, chunk=5, **kw), visualize(m, obj, chunk=chunk, **kw)
    assert (whole.settings['chunk'], split.settings['chunk']) == (5, chunk)
    torch.testing.assert_close(split.images, whole.images, rtol=0, atol=1e-5)
    np.testing.assert_allclose(split.history.values, whole.history.values, rtol=1e-4, atol=1e-5)


def test_default_chunk_keeps_cpu_activations_under_the_budget(net):
    from convsvd.featurevis import CPU_CHUNK_BYTES
    wide = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 8, 1)).eval()
    per_image = (64 + 8) * 96 * 96 * 4                                    # the in-place ReLU shares the first output
    r = visualize(wide, channel('2', list(range(7))), image_size=96, steps=1, **FAST)
    assert r.settings['activation_bytes'] == per_image
    assert r.settings['chunk'] == CPU_CHUNK_BYTES // per_image == 6
    r = visualize(wide, channel('2', list(range(7))), image_size=256, steps=1, **FAST)
    assert r.settings['chunk'] == 1                                      # one image is over the budget: one at a time
    r = visualize(wide, channel('2', [0, 1]) + diversity('2'), image_size=256, steps=1, **FAST)
    assert r.settings['chunk'] == 2                                      # diversity compares the images: never split
    r = visualize(net, singular_vector('conv2', [0, 1, 2]), image_size=28, channels=1, chunk=10, steps=1, **FAST)
    assert r.settings['chunk'] == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match='chunk must be a positive int or None'):
            visualize(net, singular_vector('conv2', [0, 1]), image_size=28, channels=1, chunk=bad, steps=1, **FAST)
    with pytest.raises(ValueError, match='cannot be split: pass chunk=None or chunk >= batch'):
        visualize(net, singular_vector('conv2', [0, 1]) + diversity('conv2'), image_size=28, channels=1, chunk=1, steps=1, **FAST)


def test_singular_vector_terms_never_run_their_layer():
    "Eq. (19) from the summed receptive fields of the input: the layer runs only if another term reads its output."
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, padding_mode='reflect'), nn.ReLU(inplace=True),
                      nn.Conv2d(6, 5, 3, stride=2, dilation=2, groups=1), nn.ReLU()).eval()
    calls = []
    handle = m[2].register_forward_hook(lambda mod, a, o: calls.append(1))
    x = torch.rand(2, 3, 20, 20)
    r = visualize(m, singular_vector('2', [0, 3]), image_size=20, steps=2, **FAST)
    v = objective_values(m, singular_vector('2', [0, 3]), x)
    assert calls == [] and r.settings['chunk'] == 2
    Y = m[:3](x).detach() - m[2].bias.detach()[:, None, None]
    U = layer_svd(m[2]).U
    np.testing.assert_allclose(v, [Y[0].sum((1, 2)) @ U[:, 0], Y[1].sum((1, 2)) @ U[:, 3]], rtol=1e-5)
    n = len(calls)                                                       # the reference above ran the layer once
    both = objective_values(m, singular_vector('2', [0, 3]) - channel('2', [1, 1]), x)
    assert len(calls) == n + 1                                           # the channel term needs the output: it ran once
    np.testing.assert_allclose(both, v - Y[:, 1].mean((1, 2)).numpy() - m[2].bias[1].item(), rtol=1e-5, atol=1e-5)
    handle.remove()
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_singular_vector_of_a_linear_layer_on_token_inputs():
    "A Linear layer applied at several positions (B, L, in): the signal sums over the positions, as for convolutions."
    torch.manual_seed(4)
    lin = nn.Linear(6, 4)
    m = nn.Sequential(nn.Flatten(1, 2), lin).eval()                     # (B, 1, 5, 6) -> 5 positions of 6 features
    x = torch.rand(3, 1, 5, 6)
    v = objective_values(m, singular_vector('1', [0, 1, 2]), x)
    Y = (lin(x[:, 0]) - lin.bias).detach().sum(1)                       # (3, 4) summed over the 5 positions
    U = layer_svd(lin).U
    np.testing.assert_allclose(v, [Y[b] @ U[:, b] for b in range(3)], rtol=1e-5)


# ---------------------------------------------------------------- one path through the core (issue 11)
def test_one_hook_path_through_the_core():
    "No private hook manager, freezing or name lookup is left: every pass goes through convsvd.core."
    import inspect
    import convsvd.featurevis as fv, convsvd.influential as inf
    for mod in (fv, inf):
        src = inspect.getsource(mod)
        assert 'register_forward_hook' not in src and 'register_forward_pre_hook' not in src, mod.__name__
    for name in ('_live_outputs', '_StopForward', '_run_until', '_frozen', '_find_module', '_close_names', '_model_dtype'):
        assert not hasattr(fv, name), name


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_channels_come_from_the_first_layer():
    from convsvd.featurevis import image_channels
    r = visualize(default_model(), singular_vector('conv2', 0), image_size=28, steps=1, progress=False)
    assert r.images.shape == (1, 1, 28, 28) and r.settings['channels'] == 1
    class SamePad(nn.Conv2d): pass                                       # subclasses of Conv2d count (EfficientNet's)
    rgb = nn.Sequential(SamePad(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    assert image_channels(rgb) == 3
    assert visualize(rgb, channel('2', 0), image_size=12, steps=1, **FAST).images.shape == (1, 3, 12, 12)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    with pytest.raises(ValueError, match=r"first linear layer '1' is a Linear\(48->3\).*pass channels="):
        visualize(mlp, channel('1', 0), image_size=4, steps=1, **FAST)
    assert visualize(mlp, channel('1', 0), image_size=4, channels=3, steps=1, **FAST).images.shape == (1, 3, 4, 4)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_matrix(dtype):
    "Every floating dtype renders; the model keeps its dtype and flags; the values match a float64 reference."
    ref = default_model().double()
    m = default_model().to(dtype).train()
    obj = singular_vector('conv2', [0, 1]) + channel('fc1', [3, 4])
    r = visualize(m, obj, image_size=28, steps=3, progress=False)
    assert r.images.dtype == torch.float32 and 0 <= r.images.min() and r.images.max() <= 1
    assert np.isfinite(r.history.to_numpy()).all() and r.settings['dtype'] == str(dtype)
    assert all(p.dtype == dtype for p in m.parameters()) and all(mod.training for mod in m.modules()) and no_hooks(m)
    assert all(p.grad is None and p.requires_grad for p in m.parameters())
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2}.get(dtype, 1e-4)
    got, want = objective_values(m, obj, r.images), objective_values(ref, obj, r.images)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    maps = similarity_overlay(m, 'relu2', r.images[0], r.images)
    torch.testing.assert_close(maps, similarity_overlay(ref, 'relu2', r.images[0], r.images), atol=5 * tol, rtol=0)


def test_device_never_moves_the_model():
    m = default_model()
    ptrs = [p.data_ptr() for p in m.parameters()]
    r = visualize(m, singular_vector('conv2', 0), image_size=28, steps=2, device='cpu', progress=False)
    assert [p.data_ptr() for p in m.parameters()] == ptrs and r.settings['device'] == 'cpu'
    for bad, msg in [('bogus', 'is not a device'), ('meta', 'holds shapes, not values')]:
        with pytest.raises(ValueError, match=msg):
            visualize(m, singular_vector('conv2', 0), image_size=28, steps=1, device=bad, progress=False)
        with pytest.raises(ValueError, match=msg):
            objective_values(m, singular_vector('conv2', 0), torch.rand(1, 1, 28, 28), device=bad)
    assert all(p.device.type == 'cpu' for p in m.parameters()) and [p.data_ptr() for p in m.parameters()] == ptrs


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_device_works_on_a_copy():
    m = default_model()
    kw = dict(image_size=28, steps=4, progress=False, transforms=None)
    g = visualize(m, singular_vector('conv2', [0, 1]), device='cuda', **kw)
    c = visualize(m, singular_vector('conv2', [0, 1]), **kw)
    assert all(p.device.type == 'cpu' for p in m.parameters()) and g.images.device.type == 'cpu'
    assert g.settings['device'].startswith('cuda')
    np.testing.assert_allclose(objective_values(m, singular_vector('conv2', [0, 1]), g.images, device='cuda'),
                               objective_values(m, singular_vector('conv2', [0, 1]), g.images), rtol=1e-3)
    assert c.images.shape == g.images.shape


def test_global_rng_is_untouched(net):
    state = torch.get_rng_state()
    r = visualize(net, singular_vector('conv2', [0, 1]) + diversity('conv2'), image_size=28, steps=3, progress=False)
    objective_values(net, singular_vector('conv2', 0), r.images)
    similarity_overlay(net, 'relu2', r.images[0], r.images)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize('style', ['parametrization', 'hook'])
def test_spectral_norm_in_train_mode_keeps_its_buffers(style):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3)
    conv = (torch.nn.utils.parametrizations.spectral_norm if style == 'parametrization' else torch.nn.utils.spectral_norm)(conv)
    m = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(6, 4, 3)).train()
    m(torch.rand(1, 3, 12, 12))
    bufs = {n: b.clone() for n, b in m.named_buffers()}
    hooks = [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in m.modules()]   # the old style has its own
    obj = singular_vector('0', [0, 1]) + channel('2', 1)
    r = visualize(m, obj, image_size=12, steps=3, **FAST)
    objective_values(m, obj, r.images)
    assert all(torch.equal(b, bufs[n]) for n, b in m.named_buffers())
    assert all(mod.training for mod in m.modules())
    assert [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in m.modules()] == hooks


def test_interrupt_restores_the_model():
    class Interrupt(nn.Module):
        "Raises KeyboardInterrupt on its third call."
        calls = 0
        def forward(self, x):
            self.calls += 1
            if self.calls == 3: raise KeyboardInterrupt
            return x
    m = nn.Sequential(nn.Conv2d(3, 4, 3), Interrupt(), nn.Conv2d(4, 4, 3)).train()
    m[0].weight.requires_grad_(False)
    with pytest.raises(KeyboardInterrupt):
        visualize(m, channel('2', 0), image_size=12, steps=10, **FAST)
    assert m[1].calls == 3
    assert all(mod.training for mod in m.modules()) and no_hooks(m)
    assert [p.requires_grad for p in m.parameters()] == [False, True, True, True]


def test_user_hooks_survive_and_run():
    m = default_model()
    seen = []
    h = m.conv1.register_forward_hook(lambda mod, a, o: seen.append(o.shape[0]))
    visualize(m, singular_vector('conv2', [0, 1]), image_size=28, steps=2, progress=False)
    assert len(seen) >= 2 and len(m.conv1._forward_hooks) == 1
    h.remove()
    assert no_hooks(m)


def test_fetch_images_is_distinct_from_exemplary_images():
    import pandas as pd
    import convsvd.featurevis as fv
    from convsvd import signals
    from convsvd.models import digits_dataset
    assert fv.fetch_images is not signals.exemplary_images and not hasattr(signals, 'fetch_images')
    ds = digits_dataset(train=False)
    frame = pd.DataFrame({'index': [5, 2]})
    assert torch.equal(fv.fetch_images(ds, frame), torch.stack([ds[5][0], ds[2][0]]))
    assert not hasattr(fv, 'exemplar_images')                                  # one name per concept


def test_images_are_drawn_in_their_real_colours():
    import pandas as pd
    import torchvision.transforms as T
    from convsvd.core import normalization
    from convsvd.featurevis import fetch_images, plot_exemplars, plot_images, plot_similarity
    raw = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    class Photos(torch.utils.data.Dataset):
        transform = T.Normalize(mean, std)
        def __len__(self): return 4
        def __getitem__(self, i): return self.transform(raw[i]), 0
    ds = Photos()
    ex = fetch_images(ds, pd.DataFrame({'index': [1, 3]}))
    assert not torch.allclose(ex[0], raw[1])                              # the dataset gives normalised tensors
    norm = normalization(ds)
    figs = [plot_exemplars(torch.rand(1, 3, 8, 8), [ex], normalize=norm), plot_images(ex, normalize=norm),
            plot_similarity(torch.rand(3, 8, 8), ex, torch.zeros(2, 8, 8), normalize=norm)]
    first = [figs[0].axes[1], figs[1].axes[0], figs[2].axes[1]]
    for ax in first: np.testing.assert_allclose(ax.images[0].get_array(), raw[1].permute(1, 2, 0).numpy(), atol=1e-6)

"""Grad-CAM: equal to an independent computation (own hooks + autograd), identical frozen and
naive, degenerate maps reported, pytorch-grad-cam's swallowed IndexError turned into an error."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from btxrd.explain.cam import compute_cams  # noqa: E402
from btxrd.explain.methods import METHODS  # noqa: E402
from btxrd.runtime.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.torch


def _inputs(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def _reference(model, layer, inputs: np.ndarray, targets: list[int], combine) -> np.ndarray:
    """Grad-CAM from first principles: activations A and gradients dy_c/dA from a forward hook
    and autograd, combined per pixel, ReLU, bilinear upsampling, min-max per image."""
    captured = {}

    def hook(module, args, output):
        output.retain_grad()
        captured["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        x = torch.from_numpy(inputs)
        logits = model(x)
        logits[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    a, g = captured["a"].detach(), captured["a"].grad
    cam = torch.relu(combine(a, g))[:, None]
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    return ((cam - low) / (high - low)).numpy()


def _gradcam(a, g):
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)


def _hirescam(a, g):
    return (g * a).sum(dim=1)


@pytest.mark.parametrize(("method", "combine"), [("gradcam", _gradcam), ("hirescam", _hirescam)])
def test_cam_equals_an_independent_computation(method, combine, make_cnn) -> None:
    model, layer = make_cnn()
    inputs, targets = _inputs(), [0, 1, 2]
    expected = _reference(model, layer, inputs, targets, combine)
    results = compute_cams(model, layer, inputs, targets, method)
    assert all(r.ok for r in results), [r.problem for r in results]
    got = np.stack([r.cam for r in results])
    assert got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Different targets, different maps: the targets really went one per image.
    other = compute_cams(model, layer, inputs, [2, 0, 1], method)
    assert not np.allclose(other[0].cam, got[0], atol=1e-3)


@pytest.mark.parametrize("method", list(METHODS))
def test_frozen_cam_is_identical_to_naive(method, make_cnn) -> None:
    model, layer = make_cnn(seed=1)
    inputs = _inputs(4, seed=1)
    naive = compute_cams(model, layer, inputs, [0, 1, 2, 1], method, freeze=False)
    frozen = compute_cams(model, layer, inputs, [0, 1, 2, 1], method, freeze=True)
    assert [r.problem for r in naive] == [r.problem for r in frozen]
    assert any(r.ok for r in naive)
    for a, b in zip(naive, frozen, strict=True):
        if a.ok:
            np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)


def test_frozen_cam_is_identical_on_resnet(tiny_resnet) -> None:
    """A real architecture: in-place ReLUs, residual additions, the arch's own target layer."""
    model, arch = tiny_resnet
    inputs = _inputs(3, size=64, seed=2)
    layer = arch.target_layer(model)
    naive = compute_cams(model, layer, inputs, [0, 1, 2], freeze=False)
    frozen = compute_cams(model, layer, inputs, [0, 1, 2], freeze=True)
    assert any(a.ok for a in naive)
    for a, b in zip(naive, frozen, strict=True):
        assert a.ok == b.ok
        if a.ok:
            np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)


def test_freezing_is_undone_and_hooks_released(make_cnn) -> None:
    model, layer = make_cnn()
    compute_cams(model, layer, _inputs(), [0, 1, 2])
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks


def test_cam_runs_even_inside_no_grad(make_cnn) -> None:
    model, layer = make_cnn()
    with torch.no_grad():
        results = compute_cams(model, layer, _inputs(), [0, 1, 2])
    assert all(r.ok for r in results)


def test_degenerate_cam_is_reported_not_returned(make_cnn) -> None:
    model, layer = make_cnn()
    with torch.no_grad():
        model[-1].weight.zero_()  # no class depends on the features: every gradient is zero
    results = compute_cams(model, layer, _inputs(), [0, 1, 2])
    assert not any(r.ok for r in results)
    assert all(r.cam is None and "flat" in r.problem for r in results)


def test_swallowed_index_error_becomes_a_model_error(capsys, make_cnn) -> None:
    model, layer = make_cnn()
    with pytest.raises(ModelError, match="swallowed an IndexError"):
        compute_cams(model, layer, _inputs(1), [7])  # class 7 of 3: IndexError inside the CAM
    assert capsys.readouterr().out == ""  # its print went to stderr, not to results


def test_target_layer_outside_the_model_is_refused(make_cnn) -> None:
    model, _ = make_cnn()
    with pytest.raises(ModelError, match="not in the model"):
        compute_cams(model, torch.nn.Conv2d(3, 4, 3), _inputs(1), [0])

"""Paper A's Table 1 baselines: crops against NumPy, one train step per family, the strict torchvision
vgg16 converter against a committed golden file (scripts/make_vgg16_golden.py)."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest
from flax import traverse_util

from cervix_jax.convert import common
from cervix_jax.convert.torchvision import vgg16_from_torchvision
from cervix_jax.models import baselines as B
from cervix_jax.train import task_baseline

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "torchvision_vgg16.npz")


def test_crop_resize_of_an_output_sized_box_is_the_slice(rng):
    image = rng.normal(size=(20, 30, 3)).astype(np.float32)
    y0, x0 = rng.integers(0, 8), rng.integers(0, 14)
    got = B.crop_resize(jnp.asarray(image), jnp.array([y0, x0, y0 + 9, x0 + 13]), (9, 13))
    np.testing.assert_allclose(got, image[y0:y0 + 9, x0:x0 + 13], rtol=1e-5, atol=1e-5)


def test_crop_resize_halving_is_the_antialiased_triangle_filter(rng):
    """A 2x shrink of an inner box = the separable (1, 3, 3, 1) / 8 triangle filter at stride 2."""
    image = rng.normal(size=(24, 28, 2))
    y0, x0, oh, ow = 2, 4, 8, 9
    got = np.asarray(B.crop_resize(jnp.asarray(image, jnp.float32),
                                   jnp.array([y0, x0, y0 + 2 * oh, x0 + 2 * ow]), (oh, ow)))
    k = np.array([1, 3, 3, 1], np.float64) / 8
    ref = np.zeros((oh, ow, 2))
    for i in range(oh):
        for j in range(ow):
            ys, xs = y0 + 2 * i - 1 + np.arange(4), x0 + 2 * j - 1 + np.arange(4)
            ref[i, j] = np.einsum("a,b,abc->c", k, k, image[np.ix_(ys, xs)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_box_from_mask_and_center_box_on_known_boxes(rng):
    h, w = 40, 60
    y0, x0 = rng.integers(0, 20), rng.integers(0, 30)
    y1, x1 = y0 + rng.integers(3, 20), x0 + rng.integers(3, 30)
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = rng.integers(0, 2, (y1 - y0, x1 - x0))
    mask[y0, x0] = mask[y1 - 1, x1 - 1] = 1
    ys, xs = np.nonzero(mask)
    ref = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float64)
    np.testing.assert_allclose(B.box_from_mask(jnp.asarray(mask)), ref)
    size = np.array([ref[2] - ref[0], ref[3] - ref[1]] * 2)
    grown = np.clip(ref + 0.25 * size * np.array([-1, -1, 1, 1]), 0, [h, w, h, w])
    np.testing.assert_allclose(B.box_from_mask(jnp.asarray(mask), 0.25), grown, rtol=1e-6)
    np.testing.assert_array_equal(B.box_from_mask(jnp.zeros((h, w))), [0, 0, h, w])
    np.testing.assert_array_equal(B.center_box((h, w), 20), [10, 20, 30, 40])
    np.testing.assert_array_equal(B.center_box((h, w), 100), [0, 0, 40, 60])


def test_lrn_and_adaptive_pool_match_numpy(rng):
    x = rng.normal(size=(2, 3, 4, 7))
    n, alpha, beta, kk = 5, 1e-4 * 50, 0.75, 1.0
    ref = np.empty_like(x)
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        ref[..., c] = x[..., c] / (kk + alpha / n * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    got = B.local_response_norm(jnp.asarray(x, jnp.float32), n, alpha, beta, kk)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    y = rng.normal(size=(1, 5, 3, 2))
    ref = np.zeros((1, 7, 7, 2))
    for i in range(7):                       # torch: [floor(i n / 7), ceil((i + 1) n / 7))
        for j in range(7):
            a, b = int(np.floor(i * 5 / 7)), int(np.ceil((i + 1) * 5 / 7))
            c, d = int(np.floor(j * 3 / 7)), int(np.ceil((j + 1) * 3 / 7))
            ref[0, i, j] = y[0, a:b, c:d].mean((0, 1))
    np.testing.assert_allclose(B.adaptive_avg_pool(jnp.asarray(y, jnp.float32), (7, 7)), ref, rtol=1e-5,
                               atol=1e-6)   # float32 means of N(0, 1) values; near-zero means need atol


def _config(arch, crop="none", freeze=0, input_size=(32, 32)):
    c = mlc.ConfigDict()
    c.data = mlc.ConfigDict({"pad_to": (48, 64)})
    c.model = mlc.ConfigDict({"name": "baseline", "arch": arch, "input_size": input_size, "width": 0.0625,
                              "fc_width": 16, "crop": crop, "crop_size": 40, "box_source": "oracle",
                              "box_margin": 0.1, "freeze_blocks": freeze, "checkpoint": ""})
    return c


@pytest.mark.parametrize("arch,crop,freeze,size", [("lenet", "none", 0, (32, 32)),
                                                   ("caffenet", "center", 0, (67, 67)),
                                                   ("vgg16", "box", 2, (40, 36)),
                                                   ("inception", "none", 0, (0, 0))])
def test_one_train_step_changes_params_and_shapes(arch, crop, freeze, size, rng):
    # every computation under one jit each: op-by-op dispatch compiles per shape (slow on a busy CPU)
    task = task_baseline.make(_config(arch, crop, freeze, size).model)
    variables = jax.jit(task.init, static_argnums=1)(jax.random.PRNGKey(rng.integers(1 << 30)), (48, 64, 3))
    b = 3
    mask = np.zeros((b, 48, 64), np.uint8)
    mask[:, 10:30, 20:50] = 1
    batch = {"image": jnp.asarray(rng.uniform(0, 1, (b, 48, 64, 3)), jnp.float32),
             "label": jnp.asarray([0, 1, 1], jnp.int32), "weight": jnp.ones(b, jnp.float32),
             "id": jnp.arange(b, dtype=jnp.int32), "cervix_mask": jnp.asarray(mask)}
    size = size if size != (0, 0) else (48, 48)       # auto: the paper's 224 capped at the image's 48
    inputs, boxes = jax.jit(lambda bt: (task.inputs(bt), task.batch_boxes(bt)))(batch)
    assert inputs.shape == (b, *size, 3)
    if crop == "box":           # the oracle box (grown by 10%) resampled to the input
        box = np.array([8, 17, 32, 53], np.float32)
        np.testing.assert_allclose(boxes[0], box)
        ref = jax.jit(B.crop_resize, static_argnums=2)(batch["image"][1], box, size)
        np.testing.assert_allclose(inputs[1], ref, rtol=1e-6)
    params, frozen = variables["params"], variables["frozen"]
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        (loss, aux), g = jax.value_and_grad(task.loss, has_aux=True)(params, frozen, batch, None, key)
        updates, opt_state = opt.update(g, opt_state, params)
        new = optax.apply_updates(params, updates)
        return new, loss, task.predict(new, frozen, batch), task.image_features(new, frozen, batch)

    new, loss, p, feats = step(params, opt.init(params), jax.random.PRNGKey(1))
    assert np.isfinite(loss)
    changed = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))), params, new))
    if arch == "inception":   # at the test's 1/16 width a few 2-channel ReLU branches start dead
        assert np.mean(changed) >= 0.8, np.mean(changed)
    else:
        assert all(changed)
    assert p.shape == (b,) and np.all((p > 0) & (p < 1))
    assert feats.shape[0] == b
    frozen_layers = set(frozen)
    assert frozen_layers == {f"Conv_{i}" for i in range(4)} if freeze == 2 else not frozen_layers
    assert not frozen_layers & set(params)


def test_box_source_file_and_config_errors(tmp_path, rng):
    boxes = rng.uniform(0, 20, (4, 4)).astype(np.float32)
    boxes[:, 2:] += 20
    np.savez(tmp_path / "boxes.npz", id=np.array([3, 0, 2, 1]), box=boxes)
    c = _config("lenet", "box")
    c.model.box_source = str(tmp_path / "boxes.npz")
    task = task_baseline.make(c.model)
    got = task.batch_boxes({"image": jnp.zeros((3, 48, 64, 3)), "id": jnp.array([2, 3, 7])})
    np.testing.assert_array_equal(got, np.concatenate([boxes[[2, 0]], [[0, 0, 48, 64]]]))  # 7: no box
    with pytest.raises(ValueError, match="only arch 'vgg16'"):
        task_baseline.make(_config("lenet", freeze=1).model)
    with pytest.raises(ValueError, match="config.model.crop"):
        task_baseline.make(_config("lenet", crop="corner").model)
    with pytest.raises(ValueError, match="config.model.arch"):
        task_baseline.make(_config("resnet").model)


@pytest.fixture(scope="module")
def vgg16_golden():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "make_vgg16_golden", os.path.join(os.path.dirname(__file__), "..", "scripts", "make_vgg16_golden.py"))
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with np.load(GOLDEN) as z:
        g = {k: z[k] for k in z.files}
    sd = recipe.recipe_state_dict([str(k) for k in g["sd_keys"]],
                                  [tuple(s) for s in json.loads(str(g["sd_shapes"]))], int(g["seed"]))
    return g, sd


def test_vgg16_converter_matches_torchvision_golden(vgg16_golden):
    g, sd = vgg16_golden
    module, variables = vgg16_from_torchvision(sd)
    assert module.num_outputs == 1000 and module.fc_width == 4096
    x = jnp.asarray(g["input"])
    features, logits = jax.jit(lambda v, x: (module.apply(v, x, method=B.VGG16.features),
                                             module.apply(v, x)))(variables, x)
    np.testing.assert_allclose(features, g["features"], rtol=1e-4, atol=1e-4 * np.abs(g["features"]).max())
    np.testing.assert_allclose(logits, g["logits"], rtol=1e-4, atol=1e-4 * np.abs(g["logits"]).max())

    # strict: a missing and an unexpected key are both named; the head is ignored only on request
    broken = {k: v for k, v in sd.items() if k != "features.7.weight"}
    broken["features.99.weight"] = sd["features.7.weight"]
    with pytest.raises(common.ConversionError, match=r"features\.7\.weight[\s\S]*features\.99\.weight"):
        vgg16_from_torchvision(broken)
    module, headless = vgg16_from_torchvision(sd, include_head=False)
    assert module.num_outputs == 1 and "Dense_2" not in headless["params"]


def test_vgg16_task_freezes_converted_blocks(vgg16_golden, monkeypatch, rng):
    """FZ3: the converted conv layers of blocks 1-3 land in `frozen`, the rest train, the head is new."""
    _, sd = vgg16_golden
    from cervix_jax.convert import cli
    monkeypatch.setattr(cli, "read_state_dict", lambda path: sd)
    c = _config("vgg16", freeze=3)
    c.model.update(width=1.0, fc_width=4096, checkpoint="vgg16.pth")
    task = task_baseline.make(c.model)
    variables = task.init(jax.random.PRNGKey(rng.integers(1 << 30)), (48, 64, 3))     # reads the state dict
    frozen, params = variables["frozen"], variables["params"]
    assert set(frozen) == {f"Conv_{i}" for i in range(7)}
    np.testing.assert_array_equal(frozen["Conv_4"]["kernel"], sd["features.10.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["Conv_12"]["bias"], sd["features.28.bias"])
    np.testing.assert_array_equal(params["Dense_1"]["kernel"], sd["classifier.3.weight"].T)
    assert params["Dense_2"]["kernel"].shape == (4096, 1)
    flat = traverse_util.flatten_dict(params)
    assert not any(p[0] in frozen for p in flat)

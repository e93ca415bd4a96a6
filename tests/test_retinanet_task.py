"""The stage-1 detector Task through the engine's train step: a tiny RetinaNet overfits 8 images."""
import functools
import importlib.util
import pathlib

import jax
import ml_collections as mlc
import numpy as np
import optax
import pytest

from cervix_jax.train import task_retinanet
from cervix_jax.train.checkpoint import Checkpoints
from cervix_jax.train.parallel import data_parallel
from cervix_jax.train.state import create_state
from cervix_jax.train.steps import train_step
from cervix_jax.train.task import make_task

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _config_module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_config", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


retinanet_config, pyramid_config = _config_module("retinanet"), _config_module("pyramid")
demo_config = _config_module("demo")


def toy_images(rng, n=8, hw=(64, 64)):
    """Noise with one bright rectangle (the "cervix"), red for class 1, green for class 0."""
    h, w = hw
    image = rng.normal(0, 0.2, (n, h, w, 3)).astype(np.float32)
    mask = np.zeros((n, h, w), bool)
    label = np.arange(n) % 2
    for i in range(n):
        bh, bw = rng.integers(20, 36, 2)
        y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
        mask[i, y:y + bh, x:x + bw] = True
        image[i, y:y + bh, x:x + bw, 0 if label[i] else 1] += 1.5
    display = np.clip((image + 1) * 100, 0, 255).astype(np.uint8)
    return {"image": image, "cervix_mask": mask, "label": label.astype(np.int32),
            "weight": np.ones(n, np.float32), "id": np.arange(n, dtype=np.int32), "display": display}


def tiny_config():
    m = mlc.ConfigDict(dict(task_retinanet.DEFAULTS))
    m.update(backbone="tiny", width=4, feature_size=16, head_width=16, head_depth=1, anchor_scale=0.5)
    return m


@pytest.mark.slow
@pytest.mark.timeout(1500)    # mostly compilation: 415 s on 2 cores shared with ~8 other test runs
def test_tiny_detector_overfits_8_images_and_stage2_reads_it(seed, tmp_path):
    rng = np.random.default_rng(seed)
    data = toy_images(rng)
    task = task_retinanet.make(tiny_config())
    optimizer = optax.adam(3e-3)
    state, frozen = create_state(task, optimizer, seed=seed, image_shape=(64, 64, 3), num_examples=8)
    step = data_parallel(functools.partial(train_step, task=task, optimizer=optimizer), "pmap",
                         num_replicated=2, donate_first=True)
    batch = jax.tree.map(lambda x: x[None], {k: v for k, v in data.items() if k != "display"})
    examples = [{k: v[i] for k, v in data.items()} for i in range(8)]
    before = task_retinanet.evaluate_detections(task, state.params, examples)
    stats0 = jax.tree.map(np.asarray, state.params["batch_stats"])
    losses = []
    for _ in range(120):
        state, metrics = step(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    after = task_retinanet.evaluate_detections(task, state.params, examples, tmp_path)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3]), losses[::10]
    assert after["AP50"] > before["AP50"] + 0.3 and after["AP50"] > 0.6, (before, after)
    assert after["top_iou_mean"] > 0.5, after
    # BatchNorm trained: running statistics moved (they get no gradient: the step's set_params).
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params["batch_stats"], stats0)
    assert max(jax.tree.leaves(moved)) > 1e-2
    assert (tmp_path / "detections.png").stat().st_size > 1000
    scores = np.asarray(task.predict(state.params, {}, {"image": data["image"]}))
    assert ((scores >= 0.5) == data["label"]).mean() >= 0.75, scores
    # Stage 2 on this stage-1 run: one config key (the workdir) gives the pyramid task its backbone.
    run = tmp_path / "stage1"
    config = retinanet_config.get_config("runlocal")
    config.model.update(dict(tiny_config()))
    run.mkdir()
    (run / "config.json").write_text(config.to_json_best_effort(indent=2))
    ckpts = Checkpoints(run / "checkpoints", keep=config.train.keep, best_metric=config.train.best_metric)
    ckpts.save(int(state.step), state, {})
    ckpts.close()
    stage2 = pyramid_config.get_config("p3p6p7,runlocal")
    stage2.model.backbone_checkpoint = str(run)
    pyramid_task = make_task(stage2)
    assert pyramid_task.model.backbone.feature_size == 16 and pyramid_task.model.backbone.width == 4
    frozen2 = pyramid_task.init(jax.random.PRNGKey(0), (64, 64, 3))["frozen"]
    jax.tree.map(np.testing.assert_array_equal, frozen2, task_retinanet.backbone_variables(state.params))


def test_retinanet_configs():
    full, cpu, local, demo = (retinanet_config.get_config(a) for a in ("", "cpu", "runlocal", "demo"))
    assert full.model.dtype == "bfloat16" and tuple(full.data.pad_to) == (800, 1200)
    assert full.train.batch_size == 16
    assert (full.model.width, full.model.feature_size, full.model.head_width) == (64, 256, 256)
    assert cpu.model.width == 16 and tuple(cpu.data.pad_to) == (128, 192) and cpu.model.dtype == "float32"
    assert local.model.backbone == "tiny" and all(c.data.with_masks for c in (full, cpu, local, demo))
    # make demo's stage 1 and its pyramid head see the same data, split and pixel normalization
    stage2 = demo_config.get_config(None)
    for key in ("name", "image_size", "pad_to", "normalization", "split_seed", "test_fraction",
                "val_fraction", "label"):
        assert demo.data[key] == stage2.data[key], key
    from cervix_jax.train.config import validate
    assert all(validate(c) == [] for c in (full, cpu, local, demo, stage2))
    assert task_retinanet.network_from_config(cpu.model).num_classes == 2
    try:
        retinanet_config.get_config("gpu")
    except ValueError as e:
        assert "unknown variant" in str(e)
    else:
        raise AssertionError("an unknown variant must fail")

"""`make demo`'s paper B chain through the command line at smoke size: stage 1 (`configs/retinanet.py:demo`,
`launch.py train` + `eval`: detection AP in `eval/metrics.json`), then the demo's pyramid head
(`configs/demo.py`, `launch.py demo`) with `--config.model.backbone_checkpoint=<stage-1 workdir>`, and the
table `demo_report` prints over both. The stage-2 run's frozen backbone is the stage-1 run's; the control
arm (`model.backbone_random`) is the same architecture with other weights; a stage-2 config whose pixel
normalization differs from the stage-1 run's is refused before anything runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections as mlc
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # three launch.py processes that train or evaluate

DATA = ["--config.data.name=synthetic_cervix/tiny", "--config.data.image_size=48",
        "--config.data.pad_to=(32,48)", "--config.train.batch_size=8", "--config.train.epochs=1"]
TINY_DETECTOR = ["--config.model.backbone=tiny", "--config.model.width=4", "--config.model.feature_size=8",
                 "--config.model.head_width=8", "--config.model.head_depth=1"]


def launch(env, *args):
    return subprocess.run([sys.executable, "launch.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def test_stage1_then_pyramid_head_on_its_backbone(tmp_path):
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    data = [*DATA, f"--config.data.data_dir={tmp_path / 'tfds'}"]
    stage1, stage2 = tmp_path / "demo_stage1", tmp_path / "demo"
    detector = ["--config", "configs/retinanet.py:demo", "--workdir", stage1, *data, *TINY_DETECTOR]
    ok(launch(env, "train", *detector))
    ok(launch(env, "eval", *detector))
    refused = launch(env, "train", "--config", "configs/demo.py", "--workdir", tmp_path / "bad", *data,
                     "--config.data.normalization=unit", f"--config.model.backbone_checkpoint={stage1}")
    assert refused.returncode == 1 and "config.data.normalization='unit': expected 'caffe'" in refused.stderr
    assert not (tmp_path / "bad").exists()
    p = ok(launch(env, "demo", "--config", "configs/demo.py", "--workdir", stage2, *data,
                  "--config.explain.max_images=4", f"--config.model.backbone_checkpoint={stage1}"))
    assert "on stage-1" in p.stdout

    from cervix_jax.train import task_retinanet
    from cervix_jax.train.demo_report import rows, table
    detection = json.loads((stage1 / "eval" / "metrics.json").read_text())["detection"]
    assert 0 <= detection["AP50"] <= 1 and detection["num_images"] > 0
    r1, r2 = rows([stage1, stage2])
    assert r1["model"] == "retinanet tiny w4 (label)" and r1["box_ap50"] == detection["AP50"]
    assert r2["model"] == f"pyramid p3,p6,p7 on stage-1 {stage1} (label)" and r2["box_ap50"] is None
    text = table([stage1, stage2])
    assert f"{detection['AP50']:.3f}" in text.splitlines()[2] and "box AP50" in text.splitlines()[0]

    # The stage-2 run's frozen backbone is the stage-1 run's best checkpoint (its backbone + FPN) ...
    from cervix_jax.train.task import make_task
    config2 = mlc.ConfigDict(json.loads((stage2 / "config.json").read_text()))
    task = make_task(config2)
    assert task.model.backbone.width == 4 and task.model.backbone.feature_size == 8
    frozen = task.init(jax.random.PRNGKey(1), (32, 48, 3))["frozen"]
    expected = task_retinanet.load_stage1_backbone(stage1, task_retinanet.stage1_config(stage1))
    jax.tree.map(np.testing.assert_array_equal, frozen, expected)
    # ... and the control arm is that architecture with random weights (the same for every head seed).
    config2.model.backbone_random = True
    control = make_task(config2)
    random_a = control.init(jax.random.PRNGKey(1), (32, 48, 3))["frozen"]
    random_b = control.init(jax.random.PRNGKey(2), (32, 48, 3))["frozen"]
    assert jax.tree.structure(random_a) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, random_a, random_b)
    kernels = [(a, b) for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(random_a),
                                              jax.tree.leaves(expected)) if "kernel" in str(path)]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)

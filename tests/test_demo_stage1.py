"""`make demo`'s paper B chain through the command line at smoke size: stage 1 (`configs/retinanet.py:demo`,
`launch.py train` + `eval`: detection AP in `eval/metrics.json`), then the demo's pyramid head
(`configs/demo.py`, `launch.py demo`) with `--config.model.backbone_checkpoint=<stage-1 workdir>`, and the
table `demo_report` prints over both; a stage-2 config whose pixel normalization differs from the stage-1
run's is refused before anything runs (that stage 2 restores exactly the stage-1 backbone is asserted in
tests/test_retinanet_task.py). The control arm (`model.backbone_random`): the same architecture with random
weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.mark.slow   # four launch.py processes: ~260 CPU-s on 2 shared cores, mostly RetinaNet init + compile
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

    from cervix_jax.train.demo_report import rows, table
    detection = json.loads((stage1 / "eval" / "metrics.json").read_text())["detection"]
    assert 0 <= detection["AP50"] <= 1 and detection["num_images"] > 0
    r1, r2 = rows([stage1, stage2])
    assert r1["model"] == "retinanet tiny w4 (label)" and r1["box_ap50"] == detection["AP50"]
    assert r2["model"] == f"pyramid p3,p6,p7 on stage-1 {stage1} (label)" and r2["box_ap50"] is None
    text = table([stage1, stage2])
    assert f"{detection['AP50']:.3f}" in text.splitlines()[2] and "box AP50" in text.splitlines()[0]


@pytest.mark.slow   # 43 CPU-s under load: eager init of the backbone twice
def test_control_arm_is_the_stage1_architecture_with_random_weights(tmp_path):
    """`model.backbone_random`: the stage-1 run's architecture (from its config.json; no checkpoint is
    read), random-initialised, the same for every head seed and different from another width's."""
    from cervix_jax.train import task_retinanet
    from cervix_jax.train.config import load_config, validate
    from cervix_jax.train.task import make_task
    stage1 = load_config(str(ROOT / "configs/retinanet.py") + ":demo")
    stage1.model.update(backbone="tiny", width=4, feature_size=8)
    (tmp_path / "config.json").write_text(stage1.to_json_best_effort())
    config = load_config(str(ROOT / "configs/demo.py"))
    config.model.backbone_checkpoint = str(tmp_path)
    config.model.backbone_random = True
    assert validate(config) == []
    task = make_task(config)
    assert (task.model.backbone.width, task.model.backbone.feature_size) == (4, 8)
    a = task.init(jax.random.PRNGKey(1), (32, 48, 3))
    b = task.init(jax.random.PRNGKey(2), (32, 48, 3))
    expected = jax.eval_shape(task_retinanet.backbone_module(stage1.model).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 64, 64, 3)))
    assert jax.tree.map(np.shape, a["frozen"]) == jax.tree.map(lambda x: x.shape, expected)
    jax.tree.map(np.testing.assert_array_equal, a["frozen"], b["frozen"])    # a fixed random backbone
    assert not np.array_equal(a["params"]["classifier"]["kernel"], b["params"]["classifier"]["kernel"])
    config.model.backbone_checkpoint = str(tmp_path / "converted")           # not a stage-1 run
    assert any("backbone_random" in p for p in validate(config))


def test_stage2_refuses_a_stage1_run_on_another_split_of_the_same_data(tmp_path):
    """Stage 1 must never have seen stage 2's test women: same dataset, different split seed is refused
    at validation; the same split, or another dataset, is accepted."""
    from cervix_jax.train.config import load_config, validate
    stage1 = load_config(str(ROOT / "configs/retinanet.py") + ":demo")
    stage1.data.split_seed = 2
    (tmp_path / "config.json").write_text(stage1.to_json_best_effort())
    config = load_config(str(ROOT / "configs/demo.py"))
    config.model.backbone_checkpoint = str(tmp_path)
    problems = validate(config)
    assert len(problems) == 1 and "split_seed=0: expected 2" in problems[0] and str(tmp_path) in problems[0]
    config.data.split_seed = 2
    assert validate(config) == []
    config.data.split_seed = 0
    config.data.name = "synthetic_cervix/tiny"            # another dataset: its own women
    assert validate(config) == []

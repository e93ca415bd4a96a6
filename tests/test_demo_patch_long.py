"""`configs/demo.py:patch_long` (paper A's long demo) is a valid config on its own dataset
(`synthetic_cervix/patch_demo`), and one Adam step of its model on that generator's images changes every
parameter and refits the iterative regulator's Gaussian of every image in the batch."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cervix_jax.data import builders, synthetic
from cervix_jax.data.pipeline import normalize
from cervix_jax.train.config import load_config, validate
from cervix_jax.train.task import make_task

ROOT = Path(__file__).resolve().parents[1]


def test_patch_long_config_trains_on_its_dataset(rng):
    config = load_config(str(ROOT / "configs/demo.py") + ":patch_long")
    assert validate(config) == []
    family, name = config.data.name.split("/")
    assert family == "synthetic_cervix"
    syn = builders.SyntheticCervix.builder_configs[name].synthetic
    assert (syn.height, syn.width) == tuple(config.data.pad_to) and syn.width == config.data.image_size
    assert syn.label == config.data.label == "dysplasia" and syn.placement == "off_centre"
    p = config.model.patch_size
    assert syn.height % p == 0 and syn.width % p == 0

    ids = rng.choice(syn.num_images, size=4, replace=False)
    examples = [synthetic.generate_example(syn, int(i)) for i in ids]
    assert all(e["image"].shape == (syn.height, syn.width, 3) for e in examples)
    labels = np.array([e["dysplasia"] for e in examples])
    assert np.array_equal(labels, [int(e["cin_grade"] >= 2) for e in examples])

    task = make_task(config)
    shape = (syn.height, syn.width, 3)
    key = jax.random.PRNGKey(int(rng.integers(1 << 30)))
    params = jax.jit(task.init, static_argnums=1)(key, shape)["params"]
    state = task.init_example_state(len(ids), shape)
    images = np.stack([normalize(e["image"], config.data.normalization) for e in examples])
    batch = {"image": jnp.asarray(images, jnp.float32),
             "label": jnp.asarray(labels, jnp.float32), "weight": jnp.ones(len(ids), jnp.float32)}
    opt = optax.adam(config.train.lr)

    @jax.jit
    def step(params, opt_state, rows):
        (loss, aux), g = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, rows, None)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), loss, aux["example_state"]

    new, loss, rows = step(params, opt.init(params), state)
    assert np.isfinite(float(loss))
    changed = jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(np.asarray(x) != np.asarray(y))),
                                           params, new))
    assert all(changed)
    assert np.all(np.isfinite(np.asarray(rows["mu"]))) and not np.allclose(rows["mu"], state["mu"])


def test_patch_long_ablation_sweeps_the_regulator_over_five_runs_of_patch_long():
    import pytest

    long_ = load_config(str(ROOT / "configs/demo.py") + ":patch_long")
    ablation = load_config(str(ROOT / "configs/demo.py") + ":patch_long_ablation")
    assert validate(ablation) == []
    assert dict(ablation.sweep.grid) == {"model.regulator": ("none", "fixed", "iterative"),
                                         "seed+data.split_seed": (0, 1, 2, 3, 4)}
    assert "regulator_ablation" in ablation.sweep.reports
    assert ablation.explain.methods == () and ablation.explain.max_images >= 240   # the report explains all
    for part in ("data", "model", "train"):                  # the same runs as patch_long otherwise
        assert ablation[part].to_dict() == long_[part].to_dict(), part
    summed = load_config(str(ROOT / "configs/demo.py") + ":patch_long_ablation_sum")
    assert validate(summed) == []
    assert dict(summed.sweep.grid) == {"model.regulator": ("fixed", "iterative"),
                                       "seed+data.split_seed": (0, 1, 2, 3, 4)}
    assert summed.model.spatial_reduction == "sum" and ablation.model.spatial_reduction == "mean"
    summed.model.spatial_reduction = "mean"                  # the only difference from patch_long_ablation
    for part in ("data", "model", "train", "explain"):
        assert summed[part].to_dict() == ablation[part].to_dict(), part
    assert tuple(summed.sweep.reports) == tuple(ablation.sweep.reports)
    with pytest.raises(ValueError, match=r"configs/demo.py: expected one of .*found 'patch_longer'"):
        load_config(str(ROOT / "configs/demo.py") + ":patch_longer")

"""Mixed precision by config (config.model.dtype = "bfloat16") for every model family.

Stated tolerance: on the same float32 parameters and fresh random images, the bf16 model's
probabilities differ from the float32 model's by at most PROB_TOL (absolute), and its loss by at most
LOSS_TOL (relative). bf16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 2e-3 per operation), so a
few layers of accumulated rounding stay well inside 2e-2. Parameters, gradients, optimizer state,
losses, metrics and predictions stay float32; the convolutions really run in bf16 (the jaxpr says so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cervix_jax.models.parts import compute_dtype, random_variables  # noqa: E402
from cervix_jax.train.config import base_config  # noqa: E402
from cervix_jax.train.task import make_task  # noqa: E402

PROB_TOL = 2e-2
LOSS_TOL = 2e-2


def _config(family: str):
    if family == "tiny":
        c = base_config("tiny")
        c.data.pad_to = (32, 48)
        return c
    if family == "pyramid":
        from configs.pyramid import get_config

        c = get_config("p3p6p7,runlocal")
        c.data.pad_to = (64, 96)
        return c
    from configs.patch import get_config

    c = get_config("runlocal,fixed")  # the regulator's refit is float32 maths, not the model's
    c.data.pad_to = (32, 48)
    c.model.patch_size = 8
    return c


def _float32_leaves(tree) -> bool:
    return all(x.dtype == jnp.float32 for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating))


@pytest.mark.parametrize("family", ["tiny", "pyramid", "patch"])
def test_bf16_agrees_with_float32(family, rng, seed):
    c32 = _config(family)
    c16 = _config(family)
    c16.model.dtype = "bfloat16"
    t32, t16 = make_task(c32), make_task(c16)
    h, w = c32.data.pad_to
    shapes32 = jax.eval_shape(lambda: t32.init(jax.random.PRNGKey(seed), (h, w, 3)))
    shapes16 = jax.eval_shape(lambda: t16.init(jax.random.PRNGKey(seed), (h, w, 3)))
    assert _float32_leaves(shapes16), "parameters must stay float32 under model.dtype=bfloat16"
    assert shapes16 == shapes32
    v = random_variables(shapes32, rng)  # compiling task.init costs more than the test

    n = 4
    batch = {
        "image": jnp.asarray(rng.uniform(0, 1, (n, h, w, 3)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 2, n), jnp.int32),
        "id": jnp.arange(n, dtype=jnp.int32),
        "weight": jnp.ones(n, jnp.float32),
    }
    predict32, predict16 = (
        jax.jit(lambda b, t=t: t.predict(v["params"], v["frozen"], b)) for t in (t32, t16)
    )
    p32, p16 = predict32(batch), predict16(batch)
    assert p16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p16), np.asarray(p32), atol=PROB_TOL, rtol=0)

    # the compute really is bf16 in one and float32 in the other
    assert "bf16" in str(predict16.trace(batch).jaxpr)
    assert "bf16" not in str(predict32.trace(batch).jaxpr)

    state = t16.init_example_state(n, (h, w, 3))
    rows = None if state is None else jax.tree.map(lambda x: x[batch["id"]], state)
    loss32, loss16 = (
        (lambda p, t=t: t.loss(p, v["frozen"], batch, rows, jax.random.PRNGKey(0))) for t in (t32, t16)
    )
    (l16, aux16), g16 = jax.jit(jax.value_and_grad(loss16, has_aux=True))(v["params"])
    l32, _ = jax.jit(loss32)(v["params"])
    assert l16.dtype == jnp.float32 and _float32_leaves(aux16["metrics"]) and _float32_leaves(g16)
    assert abs(float(l16) - float(l32)) <= LOSS_TOL * abs(float(l32))
    assert _float32_leaves(optax.adam(1e-3).init(v["params"]))


def test_compute_dtype_names_the_key():
    assert compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ValueError, match="config.model.dtype"):
        compute_dtype("float16")

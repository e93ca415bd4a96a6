"""The `Task` for paper A: patch-weight classifier + per-image Gaussian spatial regulator.

Loss per image (Eqn. 4-5): BCE(logit, label) + lambda * sum_m D(a, s) (or the mean over m), s that image's
regulator density; weighted mean over the batch. Per-example state = one regulator per example,
{"mu": [N, 2], "cov": [N, 2, 2]}, all initialised by `regulator.init_regulator`. In the
"iterative" mode the batch's regulators are refit (vmapped, inside the jitted step) from the patch
weights of this forward pass and returned as new rows; the engine stores them, so they are used the
next time that image is visited (Algorithm 1: refit once per epoch per image).

config.model keys (`DEFAULTS`; plus dtype, the compute dtype): patch_size, aggregation ("average" |
"sum" | "normalized" | "concat"), mlp_hidden, weight_hidden (the weight network's hidden widths, the
paper's (800, 512, 128) by default), regulator ("none" | "fixed" | "iterative"), reg_lambda,
spatial_reduction ("sum" | "mean" over the patches: Eqn. 5 sums), eps_w, eig_floor, refit_weighting
("raw" | "minmax": what the iterative refit is fit from, see `refit_weights`), conv_impl ("auto" | "xla" |
"im2col": how the patch CNN's convolutions are computed, not what; `models.patch.conv_impl_for`).
"none" drops the spatial term whatever reg_lambda is, and keeps no per-example state. The patch grid
is the image shape over patch_size (`grid_for`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cervix_jax import regulator
from cervix_jax.models.parts import ExplainableModel, compute_dtype
from cervix_jax.models.patch import PatchWeightClassifier, aggregate, crm_patch
from cervix_jax.train.task import Task

# refit_weighting: what the iterative regulator is fit from, "raw" patch weights (the paper) or
# "minmax" (a - min) / (max - min + 1e-6) (docs/patch_model.md: a flat map then gives no update).
# aggregation / spatial_reduction: the paper's literal Eqn. 4 ("average" over the patches) and Eqn. 5
# ("sum" of D over the patches) by default; docs/patch_model.md gives the alternatives and why.
DEFAULTS = {"patch_size": 28, "aggregation": "average", "mlp_hidden": (256, 64),
            "weight_hidden": (800, 512, 128), "regulator": "iterative", "reg_lambda": 0.1,
            "spatial_reduction": "sum", "eps_w": 1e-3, "eig_floor": 0.25, "refit_weighting": "raw",
            "conv_impl": "auto"}
REGULATORS = ("none", "fixed", "iterative")
REFIT_WEIGHTINGS = ("raw", "minmax")


def refit_weights(a, weighting: str):
    """The map the iterative regulator is fit from, one image [gh, gw] -> [gh, gw].

    "raw": the patch weights themselves (the paper's Eqns. 8-10). "minmax": (a - min) /
    (max - min + 1e-6) (docs/patch_model.md): the MLE ignores the weights' common floor, which with
    raw weights pulls every fit toward the grid centre (a flat map fits the uniform-grid Gaussian);
    an exactly flat map gives zeros, so `regulator.refit` keeps the previous regulator (eps_w).
    """
    if weighting == "raw":
        return a
    if weighting == "minmax":
        return regulator.minmax(a)
    raise ValueError(f"config.model.refit_weighting: expected one of {REFIT_WEIGHTINGS}, found {weighting!r}")


class PatchTask(Task):
    name = "patch"

    def __init__(self, model_config):
        m = model_config
        if m.regulator not in REGULATORS:
            raise ValueError(f"config.model.regulator: expected one of {REGULATORS}, "
                             f"found {m.regulator!r}")
        self.model = PatchWeightClassifier(patch_size=int(m.patch_size), aggregation=m.aggregation,
                                           mlp_hidden=tuple(m.mlp_hidden),
                                           weight_hidden=tuple(m.get("weight_hidden", (800, 512, 128))),
                                           dtype=compute_dtype(m.get("dtype", "float32")),
                                           conv_impl=m.get("conv_impl", "auto"))
        self.mode = m.regulator
        self.refit_weighting = m.get("refit_weighting", "raw")   # configs older than the key: "raw"
        if self.refit_weighting not in REFIT_WEIGHTINGS:
            raise ValueError(f"config.model.refit_weighting: expected one of {REFIT_WEIGHTINGS}, "
                             f"found {self.refit_weighting!r}")
        self.reg_lambda = 0.0 if m.regulator == "none" else float(m.reg_lambda)
        self.spatial_reduction = m.get("spatial_reduction", "mean")   # configs older than the key
        if self.spatial_reduction not in regulator.SPATIAL_REDUCTIONS:
            raise ValueError(f"config.model.spatial_reduction: expected one of "
                             f"{regulator.SPATIAL_REDUCTIONS}, found {self.spatial_reduction!r}")
        self.eps_w = float(m.eps_w)
        self.eig_floor = float(m.eig_floor)

    def grid_for(self, image_shape) -> tuple[int, int]:
        """The patch grid (gh, gw) of images [H, W, ...]; H and W must be multiples of patch_size."""
        h, w = tuple(image_shape)[:2]
        p = self.model.patch_size
        if h % p or w % p:
            raise ValueError(f"config.data.pad_to {(h, w)} is not a multiple of "
                             f"config.model.patch_size {p}")
        return (h // p, w // p)

    # -- Task protocol -------------------------------------------------------------------------
    def init(self, rng, image_shape):
        self.grid_for(image_shape)
        variables = self.model.init(rng, jnp.zeros(image_shape, jnp.float32))
        return {"params": variables["params"], "frozen": {}}

    def init_example_state(self, num_examples: int, image_shape) -> Optional[dict]:
        if self.mode == "none":
            return None
        mu, cov = regulator.init_regulator(self.grid_for(image_shape))
        return {"mu": jnp.broadcast_to(mu, (num_examples, 2)),
                "cov": jnp.broadcast_to(cov, (num_examples, 2, 2))}

    def forward(self, params, images):
        """images [b, H, W, 3] -> (logits [b], patch weights [b, gh, gw])."""
        chex.assert_rank(images, 4)
        return jax.vmap(lambda x: self.model.apply({"params": params}, x))(images)

    def loss(self, params, frozen, batch, example_state, rng):
        del frozen, rng  # no frozen part, no dropout
        logits, a = self.forward(params, batch["image"])
        labels = batch["label"].astype(jnp.float32)
        wt = batch["weight"].astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(logits, labels)
        if self.mode == "none":
            spatial = jnp.zeros_like(bce)
            new_state = None
        else:
            mu, cov = example_state["mu"], example_state["cov"]
            chex.assert_shape(mu, (a.shape[0], 2))
            chex.assert_shape(cov, (a.shape[0], 2, 2))
            spatial = jax.vmap(functools.partial(regulator.spatial_loss,
                                                 reduction=self.spatial_reduction))(a, mu, cov)  # Eqn. 5
            if self.mode == "iterative":
                refit = jax.vmap(lambda m, c, x: regulator.refit(
                    m, c, refit_weights(x, self.refit_weighting), eps_w=self.eps_w,
                    eig_floor=self.eig_floor))
                new_mu, new_cov, valid = refit(mu, cov, jax.lax.stop_gradient(a))
            else:
                new_mu, new_cov, valid = mu, cov, jnp.zeros(mu.shape[0], bool)
            new_state = {"mu": new_mu, "cov": new_cov}
        per_example = bce + self.reg_lambda * spatial
        mean = lambda v: jnp.sum(wt * v) / jnp.maximum(jnp.sum(wt), 1.0)
        metrics = {"bce": mean(bce), "spatial": mean(spatial),
                   "accuracy": mean(((logits > 0) == (labels > 0.5)).astype(jnp.float32))}
        if new_state is not None:
            metrics["refit_valid"] = mean(valid.astype(jnp.float32))
        return mean(per_example), {"metrics": metrics, "example_state": new_state}

    def predict(self, params, frozen, batch):
        del frozen
        logits, _ = self.forward(params, batch["image"])
        return jax.nn.sigmoid(logits)

    def image_features(self, params, frozen, batch):
        """[b, D] the aggregated image vectors f of Eqn. 4 (the classifier's input; Fig. 4d's t-SNE)."""
        del frozen
        model = self.model

        def one(image):
            grid = model.apply({"params": params}, image, method=PatchWeightClassifier.features)
            gh, gw, k = grid.shape
            a = model.apply({"params": params}, grid, method=PatchWeightClassifier.patch_weights)
            return aggregate(grid.reshape(gh * gw, k), a.reshape(-1), model.aggregation)

        return jax.vmap(one)(batch["image"])

    def explainable(self, variables) -> ExplainableModel:
        v = {"params": variables["params"]}
        model = self.model

        def head(grid):
            logit, _ = model.apply(v, grid, method=PatchWeightClassifier.head)
            p = jax.nn.sigmoid(logit)
            return jnp.stack([1.0 - p, p])

        features = lambda image: model.apply(v, image, method=PatchWeightClassifier.features)
        return ExplainableModel(
            features=features,
            head=head,
            scores=lambda image: head(features(image)),
            weights=lambda image: model.apply(v, image)[1],
            crm=None if model.aggregation == "concat" else (lambda grid: crm_patch(model, v, grid)),
            class_names=("normal", "dysplasia"),
        )

    def on_epoch_end(self, example_state, epoch: int, workdir, data, num_images: int = 4) -> None:
        """Records the regulators of the first `num_images` training images after every epoch in
        WORKDIR/regulator_history.npz and redraws WORKDIR/regulator_evolution.png (Fig. 5 d-g)."""
        if example_state is None:
            return
        from cervix_jax.train import rundir
        from cervix_jax.viz.regulator import plot_regulator_evolution

        if getattr(self, "_tracked", None) is None:
            self._tracked = data.examples("train", num_images)
        ids = np.array([e["id"] for e in self._tracked])
        history = rundir.read_regulator_history(workdir)
        if not history:
            mu0, cov0 = regulator.init_regulator(self.grid_for(data.image_shape))
            history["mu_0"] = np.broadcast_to(np.asarray(mu0), (len(ids), 2))
            history["cov_0"] = np.broadcast_to(np.asarray(cov0), (len(ids), 2, 2))
        history[f"mu_{epoch}"] = np.asarray(example_state["mu"])[ids]
        history[f"cov_{epoch}"] = np.asarray(example_state["cov"])[ids]
        rundir.write_regulator_history(workdir, history)
        epochs = sorted(int(k[3:]) for k in history if k.startswith("mu_"))
        if len(epochs) > 6:  # keep the figure readable: first, last and evenly spaced between
            epochs = sorted({epochs[int(round(i))] for i in np.linspace(0, len(epochs) - 1, 6)})
        centers = np.array([regulator.mask_centre(e.get("cervix_mask")) for e in self._tracked])
        masks = (np.stack([e["cervix_mask"] for e in self._tracked]) if "cervix_mask" in self._tracked[0]
                 else None)
        plot_regulator_evolution(
            np.stack([e["display"] for e in self._tracked]),
            [(e, history[f"mu_{e}"], history[f"cov_{e}"]) for e in epochs], self.model.patch_size,
            Path(workdir) / "regulator_evolution.png", true_centers=centers, masks=masks)


def make(model_config) -> PatchTask:
    """Task factory registered as "patch"; takes config.model."""
    return PatchTask(model_config)

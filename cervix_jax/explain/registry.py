"""One registry of explainers by name, one call signature.

    explain(method, model, image, *, target=None, **opts) -> map [h, w]

`model` is a `cervix_jax.models.parts.ExplainableModel`, `image` one preprocessed image
[H, W, 3]. The map lies on the feature grid for the CAM family and CRM, on the image grid for
"occlusion" and "integrated_gradients" (`Explainer.grid`). `target` (class index, may be traced)
defaults to the predicted class argmax(model.scores(image)); CRM and Eigen-CAM ignore it (CRM
sums over all classes); "crm_linear" is CRM in paper B's Eq. (1) space (linear scores of the pooled
features, no bias or softmax; `crm.crm_linear`). Maps are raw: see `postprocess.heatmap` for
display. "crm" runs the exact
`crm_pooled` when the model has `post_pool`, else the model's own closed form `model.crm` (paper A's
patch model), else `crm` in chunks of `batch_size=64` locations.
Batch with `jax.vmap(lambda x: explain(method, model, x))`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from cervix_jax.explain import gradients, perturbation
from cervix_jax.explain.cam import cam
from cervix_jax.explain.crm import crm, crm_linear, crm_nlm, crm_pooled
from cervix_jax.explain.eigen import eigencam

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Explainer:
    """fn(model, image, target, **opts) -> [h, w]; grid: "features" or "image"; needs: model
    fields that must not be None (e.g. "kernel")."""

    fn: Callable[..., Array]
    grid: str
    needs: tuple[str, ...] = ()


REGISTRY: dict[str, Explainer] = {}


def register(name: str, fn: Callable[..., Array], *, grid: str, needs: tuple[str, ...] = ()) -> None:
    """Adds (or replaces) an explainer: fn(model, image, target, **opts) -> [h, w]."""
    if grid not in ("features", "image"):
        raise ValueError(f"register({name!r}): grid must be 'features' or 'image', found {grid!r}")
    REGISTRY[name] = Explainer(fn, grid, tuple(needs))


def supports(method: str, model) -> bool:
    """Whether `model` has every field `method` needs (e.g. "cam" needs `kernel`)."""
    return all(getattr(model, field) is not None for field in _get(method).needs)


def _get(method: str) -> Explainer:
    if method not in REGISTRY:
        raise ValueError(f"explain: unknown method {method!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[method]


def explain(method: str, model, image: Array, *, target: Optional[Array] = None, **opts) -> Array:
    """The `method` map of one image [H, W, 3] for class `target` (default: the predicted class)."""
    explainer = _get(method)
    missing = [field for field in explainer.needs if getattr(model, field) is None]
    if missing:
        raise ValueError(f"explain({method!r}): the model has no {missing} (ExplainableModel "
                         f"fields); this method needs them")
    if target is None:
        target = jnp.argmax(model.scores(image))
    return explainer.fn(model, image, target, **opts)


def _cam(model, image, target):
    return cam(model.features(image), model.kernel)[..., target]


def _crm(model, image, target, *, score_space: str = "scores", batch_size: Optional[int] = 64):
    del target  # CRM sums over all classes
    features = model.features(image)
    if score_space == "nlm":
        if model.kernel is None:
            raise ValueError("explain('crm', score_space='nlm'): needs the model's dense `kernel`")
        return crm_nlm(features, model.kernel)
    if score_space != "scores":
        raise ValueError(f"explain('crm'): score_space must be 'scores' or 'nlm', found {score_space!r}")
    if model.post_pool is not None:
        return crm_pooled(model.post_pool, features, model.pool_weights)
    if model.crm is not None:
        return model.crm(features)
    return crm(model.head, features, batch_size=batch_size)


def _crm_linear(model, image, target):
    del target  # CRM sums over all classes
    return crm_linear(model.features(image), model.kernel, model.pool_weights)


def _grad_method(fn):
    return lambda model, image, target: fn(model.head, model.features(image), target)


register("cam", _cam, grid="features", needs=("kernel",))
register("crm", _crm, grid="features")
register("crm_linear", _crm_linear, grid="features", needs=("kernel",))   # paper B's Eq. (1) space
register("gradcam", _grad_method(gradients.gradcam), grid="features")
register("gradcam++", _grad_method(gradients.gradcam_plus_plus), grid="features")
register("hirescam", _grad_method(gradients.hirescam), grid="features")
register("xgradcam", _grad_method(gradients.xgradcam), grid="features")
register("layercam", _grad_method(gradients.layercam), grid="features")
register("scorecam", lambda model, image, target, **o: perturbation.scorecam(
    model.scores, image, model.features(image), target, **o), grid="features")
register("ablationcam", lambda model, image, target, **o: perturbation.ablationcam(
    model.head, model.features(image), target, **o), grid="features")
register("eigencam", lambda model, image, target: eigencam(model.features(image)), grid="features")
register("occlusion", lambda model, image, target, **o: perturbation.occlusion(
    model.scores, image, target, **o), grid="image")
register("integrated_gradients", lambda model, image, target, **o: gradients.integrated_gradients(
    model.scores, image, target, **o), grid="image")
register("weights", lambda model, image, target: model.weights(image), grid="features",
         needs=("weights",))

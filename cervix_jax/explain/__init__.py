"""Explainers as pure JAX functions of one example: jit, vmap, grad and sweep them.

Core (the public contract in docs/architecture.md): `cam`, `crm`, `crm_pooled`; plus `crm_nlm` (the
NLM group's score space) and `crm_linear` (paper B's Eq. (1) space), the Grad-CAM family, perturbation
methods, Eigen-CAM, a registry (`explain`), post-processing, faithfulness metrics and `explain_to_dir`.
See docs/explainers.md.
"""
from cervix_jax.explain.cam import cam
from cervix_jax.explain.crm import crm, crm_linear, crm_nlm, crm_pooled
from cervix_jax.explain.eigen import eigencam
from cervix_jax.explain.gradients import (gradcam, gradcam_plus_plus, hirescam,
                                          integrated_gradients, layercam, xgradcam)
from cervix_jax.explain.perturbation import ablationcam, occlusion, scorecam
from cervix_jax.explain.registry import REGISTRY, explain, register, supports
from cervix_jax.explain import faithfulness, postprocess
from cervix_jax.explain.run import explain_to_dir

__all__ = ["cam", "crm", "crm_pooled", "crm_nlm", "crm_linear", "eigencam", "gradcam", "gradcam_plus_plus",
           "hirescam", "xgradcam", "layercam", "integrated_gradients", "occlusion", "scorecam",
           "ablationcam", "REGISTRY", "explain", "register", "supports", "faithfulness", "postprocess",
           "explain_to_dir"]

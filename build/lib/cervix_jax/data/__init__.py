"""Data: the synthetic cervix dataset, TF-free tfds builders, robust image reading, the pipeline.

Importing this package registers the tfds builders `synthetic_cervix` and `cervix_folder`.
The pipeline parts (`pipeline`, `split`, `blur`) are imported on first use, so that importing the
data layer does not import JAX.
"""
import importlib

from cervix_jax.data import builders, images, synthetic
from cervix_jax.data.builders import load_source, prepare
from cervix_jax.data.images import read_image
from cervix_jax.data.synthetic import SyntheticConfig, generate, generate_example

# name -> submodule that defines it, imported lazily (owned by the pipeline).
_LAZY = {"gaussian_blur": "blur", "group_split": "split", "preprocess": "pipeline",
         "Loader": "pipeline", "index_source": "pipeline", "normalize": "pipeline"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"cervix_jax.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cervix_jax.data' has no attribute {name!r}")


__all__ = ["SyntheticConfig", "generate", "generate_example", "prepare", "load_source", "read_image",
           "gaussian_blur", "group_split", "preprocess", "Loader", "index_source", "normalize",
           "builders", "images", "synthetic"]

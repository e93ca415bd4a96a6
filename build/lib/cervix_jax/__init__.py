"""cervix-jax: explainable cervix-image classification in JAX/Flax."""
__version__ = "0.1.0"

from cervix_jax import data  # noqa: E402,F401  (registers the tfds builders)

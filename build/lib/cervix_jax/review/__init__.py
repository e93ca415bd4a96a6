"""Expert review of CAM/CRM heatmaps (paper B, Section 4.3): a local web page and its statistics."""
from cervix_jax.review.server import make_server, serve
from cervix_jax.review.summary import summarize

__all__ = ["make_server", "serve", "summarize"]

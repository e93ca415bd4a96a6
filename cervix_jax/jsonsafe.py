"""Strict JSON for every file the engine writes: no `NaN`/`Infinity` tokens (which `JSON.parse`,
`jq` and most JSON readers reject). A non-finite float is written as `null`; NumPy scalars and
arrays become numbers and lists.

    from cervix_jax.jsonsafe import dumps
    path.write_text(dumps(result, indent=2))
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (dicts, lists, tuples, NumPy values)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """json.dumps of `finite(obj)` with allow_nan=False (other objects through `default=str` if given)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)

"""Strict assembly of Flax variables from a flat source checkpoint, and the layer-name plumbing shared
by the Keras and torchvision converters.

A converter states, for every leaf of the target tree, which source tensor fills it (and how it is
transformed). `strict_assemble` then requires: every source tensor used exactly once (or ignored by an
explicit prefix), every target leaf filled, every shape right; otherwise ONE error lists the missing,
unexpected and mis-shaped keys. No silent partial loads.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Iterable, Mapping, Optional

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

Path = tuple[str, ...]
Rule = tuple[str, Optional[Callable[[np.ndarray], np.ndarray]]]   # (source key, transform)
_MAX_LISTED = 40


class ConversionError(ValueError):
    """A source checkpoint does not map exactly onto the target network."""


def to_numpy(x) -> np.ndarray:
    """NumPy array from a NumPy array or a torch tensor (torch is never imported here)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def template_of(module, image_hw: tuple[int, int] = (64, 64)) -> dict:
    """Abstract variables (ShapeDtypeStructs) of `module` for images [1, *image_hw, 3]; no compute."""
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *image_hw, 3), jnp.float32))


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def strict_assemble(source: Mapping[str, np.ndarray], rules: Mapping[Path, Rule], template: dict, *,
                    ignore: Iterable[str] = (), where: str = "source") -> dict:
    """Fills `template` (a variables tree of shapes) from `source` by `rules`; float32 jnp leaves.

    rules: target path (as in flax.traverse_util.flatten_dict(template)) -> (source key, transform).
    ignore: source-key prefixes dropped on purpose (e.g. detection heads); logged, never an error.
    Raises ConversionError listing missing targets/source keys, unexpected and mis-shaped keys.
    """
    flat = traverse_util.flatten_dict(template)
    ignore = tuple(ignore)
    ignored = sorted(k for k in source if k.startswith(ignore)) if ignore else []
    missing, misshaped, used, out = [], [], {}, {}
    for path, spec in flat.items():
        name = "/".join(path)
        if path not in rules:
            missing.append(f"{name} (no source name for this target)")
            continue
        key, transform = rules[path]
        if key in used:
            raise ConversionError(f"{where}: source key {key!r} mapped to both {used[key]} and {name}")
        used[key] = name
        if key not in source:
            missing.append(f"{key} (for {name}, shape {tuple(spec.shape)})")
            continue
        value = to_numpy(source[key])
        value = transform(value) if transform is not None else value
        if tuple(value.shape) != tuple(spec.shape):
            misshaped.append(f"{key}: expected {tuple(spec.shape)} (for {name}, after transform), "
                             f"found {tuple(value.shape)}")
            continue
        out[path] = jnp.asarray(value, jnp.float32)
    unexpected = sorted(k for k in source if k not in used and k not in set(ignored))
    if missing or unexpected or misshaped:
        parts = [_listing(t, names) for t, names in (("missing", missing), ("unexpected", unexpected),
                                             ("mis-shaped", misshaped)) if names]
        raise ConversionError(f"{where}: does not map exactly onto the network\n" + "\n".join(parts))
    if ignored:
        log.info("%s: ignored %d tensors on purpose: %s", where, len(ignored), ", ".join(ignored))
    return traverse_util.unflatten_dict(out)


# --- Flax ResNet / FPN paths -> layer ids ------------------------------------------------------------
# A target path is (collection, [root,] layer..., slot), e.g. ("params", "backbone", "res2a",
# "bn_branch2a", "scale"). `layer_id` turns it into ("res2a/bn_branch2a", "scale"), with roots
# "backbone"/"fpn" dropped for the ResNet and kept as "fpn/..." for the FPN.

_BLOCK = re.compile(r"^res(\d)([a-z])$")


def layer_id(path: Path) -> tuple[str, str]:
    """("params", "backbone", "res2a", "branch2a", "kernel") -> ("res2a/branch2a", "kernel")."""
    inner = list(path[1:-1])
    if inner and inner[0] == "backbone":
        inner = inner[1:]
    return "/".join(inner), path[-1]


def parse_block(layer: str) -> tuple[int, int, str]:
    """"res4c/bn_branch2b" -> (stage 4, block index 2, "bn_branch2b")."""
    block, part = layer.split("/")
    m = _BLOCK.match(block)
    if m is None:
        raise ValueError(f"not a ResNet block layer: {layer!r}")
    return int(m.group(1)), ord(m.group(2)) - ord("a"), part


def is_norm(layer: str) -> bool:
    """BatchNorm ('bn...') of the ResNet or GroupNorm ('..._norm') of a RetinaNet head."""
    last = layer.split("/")[-1]
    return last.startswith("bn") or last.endswith("_norm")


_HEAD = re.compile(r"^(classification|regression)_submodel/"
                   r"pyramid_(?:classification|regression)(?:_(\d+)(_norm)?)?$")


def parse_head(layer: str) -> Optional[tuple[str, Optional[int], bool]]:
    """RetinaNet head layer id -> (kind, hidden index or None for the output conv, is GroupNorm), or None
    for a backbone/FPN layer: 'classification_submodel/pyramid_classification_2_norm' -> ('classification',
    2, True)."""
    m = _HEAD.match(layer)
    if m is None:
        return None
    return m.group(1), None if m.group(2) is None else int(m.group(2)), m.group(3) is not None


def make_rules(template: dict, name_of: Callable[[str], str],
               slot_of: Callable[[bool, str], tuple[str, Optional[Callable]]], sep: str) -> dict:
    """Rules for every leaf: source key = name_of(layer) + sep + slot, slot/transform from slot_of."""
    rules = {}
    for path in traverse_util.flatten_dict(template):
        layer, slot = layer_id(path)
        src_slot, transform = slot_of(is_norm(layer), slot)
        rules[path] = (f"{name_of(layer)}{sep}{src_slot}", transform)
    return rules

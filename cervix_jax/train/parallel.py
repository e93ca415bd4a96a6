"""Data parallelism: the ONE place where a per-device step is wrapped for many devices.

A per-device function `fn(*replicated, batch)` uses collectives over `AXIS` ("batch"); the
replicated arguments (state, frozen variables) carry no device axis; `batch` leaves are
[D_local, b, ...]. Results must be replicated (pmean / all_gather). `config.parallel.wrapper`
picks `jax.pmap` over local devices (the design card) or `jax.jit(jax.shard_map)` over a one-axis
mesh of all devices; both give the same numbers.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "batch"
WRAPPERS = ("pmap", "shard_map")


def data_parallel(fn: Callable, wrapper: str, *, num_replicated: int, donate_first: bool = False) -> Callable:
    """Wraps per-device `fn(*replicated, batch)` as `f(*replicated, batch[D_local, b, ...])`."""
    donate = (0,) if donate_first else ()
    if wrapper == "pmap":
        return jax.pmap(fn, axis_name=AXIS, in_axes=(None,) * num_replicated + (0,), out_axes=None,
                        donate_argnums=donate)
    if wrapper != "shard_map":
        raise ValueError(f"config.parallel.wrapper: expected one of {WRAPPERS}, found {wrapper!r}")
    mesh = jax.make_mesh((jax.device_count(),), (AXIS,))
    per_device = lambda *args: fn(*args[:-1], jax.tree.map(lambda x: x[0], args[-1]))
    inner = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(),) * num_replicated + (P(AXIS),),
                                  out_specs=P(), check_vma=False), donate_argnums=donate)
    sharded = NamedSharding(mesh, P(AXIS))
    replicated = NamedSharding(mesh, P())

    def wrapped(*args):
        reps = [jax.tree.map(lambda x: _put_replicated(x, replicated), a) for a in args[:-1]]
        batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharded, np.asarray(x)),
                             args[-1])
        return inner(*reps, batch)

    return wrapped


def _put_replicated(x, sharding: NamedSharding):
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    host = np.asarray(jax.device_get(x)) if (not isinstance(x, jax.Array) or x.is_fully_addressable) else None
    if host is None:  # a global array with another layout: let jit reshard it
        return x
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def to_host(tree):
    """NumPy copy of a replicated pytree (works for global arrays in multi-process runs)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(one, tree)


def initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """`jax.distributed.initialize` from flags, else from the standard environment
    (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a cluster JAX detects).
    CPU runs use gloo collectives."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    if process_id < 0:
        process_id = int(os.environ.get("JAX_PROCESS_ID", "-1"))
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        if num_processes <= 0 or process_id < 0:
            raise ValueError(f"--coordinator={coordinator} needs --num_processes and --process_id "
                             f"(found {num_processes}, {process_id})")
        jax.distributed.initialize(coordinator, num_processes, process_id)
    else:
        jax.distributed.initialize()

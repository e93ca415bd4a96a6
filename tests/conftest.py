"""Shared test fixtures: every random generator in the suite is seeded, and the seed is printed on failure.

A test that wants random inputs takes the ``rng`` fixture (a ``np.random.Generator``) or the ``seed``
fixture (an ``int`` for ``jax.random.PRNGKey`` or a generator of its own). The seed is fresh for each
test and each run, so inputs stay random, and a failure report ends with

    random seed: 123456789 (rerun with CERVIX_TEST_SEED=123456789)

Setting ``CERVIX_TEST_SEED`` fixes the seed of every test, which reproduces a failure exactly.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

_SEED_ENV = "CERVIX_TEST_SEED"

# The suite compiles far more than it computes (tiny shapes, hundreds of distinct programs, launch.py
# subprocesses that inherit this environment), and on CPU most of XLA's compile time is LLVM's
# optimisation passes. Level 0 skips them: the same HLO and the same float semantics, about 3x less
# compile time (measured: the four baseline train-step tests 148 -> 42 CPU-s). Set before JAX is
# imported; CERVIX_TEST_XLA_OPT=1 keeps XLA's default (to check a failure is not the flag's).
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if os.environ.get("CERVIX_TEST_XLA_OPT") != "1" and _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


def draw_seed() -> int:
    """The seed for one test: ``CERVIX_TEST_SEED`` if set, else a fresh 31-bit number."""
    fixed = os.environ.get(_SEED_ENV)
    if fixed is not None:
        try:
            return int(fixed)
        except ValueError as err:
            raise ValueError(f"{_SEED_ENV} must be an integer; found {fixed!r}") from err
    return secrets.randbits(31)


@pytest.fixture
def seed(request) -> int:
    """An int seed, recorded on the test so that a failure prints it."""
    value = draw_seed()
    request.node.user_properties.append(("random seed", value))
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    """A NumPy generator seeded by the ``seed`` fixture."""
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [value for name, value in item.user_properties if name == "random seed"]
        for value in seeds:
            report.sections.append(
                ("random seed", f"random seed: {value} (rerun with {_SEED_ENV}={value})"))


def pytest_collection_modifyitems(session, config, items):
    """Files holding a `slow`-marked test run first (their order otherwise kept, and each file's tests
    in their own order): under `make test`'s xdist `--dist loadfile --no-loadscope-reorder` each file is
    one unit of work handed out in this order, so the long files start at once on both workers instead
    of one of them starting last and running alone at the end (longest work first)."""
    def file_of(item):
        return item.nodeid.split("::", 1)[0]

    slow_files = {file_of(it) for it in items if it.get_closest_marker("slow") is not None}
    items[:] = sorted(items, key=lambda it: file_of(it) not in slow_files)   # stable: order kept inside

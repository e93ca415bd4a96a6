"""Reports: tables and figures made from finished runs, read through `cervix_jax.train.rundir`.

Each report is a module with `write(config, workdir) -> dict` (what it wrote; None when it has
nothing to report on). `config.sweep.reports` names the ones a config wants, as big_vision's
`config.evals` names evaluators; `launch.py sweep` runs them at the end of a sweep and
`launch.py report` runs them on an existing workdir.

    summary             WORKDIR/summary.{md,csv}: test metrics per grid point, mean ± sd over seeds
    paper_b_table       WORKDIR/paper_table.{md,csv}: paper B's heads x blur, bootstrap intervals
    paper_b_maps        WORKDIR/maps/: CAM vs CRM per head and blur (metrics per image, grids)
    regulator_evidence  WORKDIR/regulator_evidence.{md,json}: paper A's regulator claim
    regulator_ablation  WORKDIR/regulator_ablation.{md,json} + figures: paper A's Fig. 5 ablation (regulator
                        x Eqn. 5 reduction x runs that vary the split; runs x women intervals, controls)
    paper_a_table1      WORKDIR/table1.{md,csv}, fig4{a,b,c}_*.png: paper A's Table 1 and Fig. 4 a-c
                        (`python -m cervix_jax.reports.paper_a` combines several sweeps, adds Fig. 4d)
"""
from __future__ import annotations

import importlib
from typing import Optional, Sequence

_REGISTRY: dict[str, str] = {
    "summary": "cervix_jax.reports.summary",
    "paper_b_table": "cervix_jax.reports.paper_b_table",
    "paper_b_maps": "cervix_jax.reports.paper_b_maps",
    "regulator_evidence": "cervix_jax.reports.regulator_evidence",
    "regulator_ablation": "cervix_jax.reports.regulator_ablation",
    "paper_a_table1": "cervix_jax.reports.paper_a",
}


def register(name: str, module: str) -> None:
    """Registers a report module (one with `write(config, workdir) -> dict`) under `name`."""
    _REGISTRY[name] = module


def write(config, workdir, names: Optional[Sequence[str]] = None) -> dict:
    """Runs the reports `names` (default `config.sweep.reports`) in order; {name: what it returned}."""
    names = tuple(config.sweep.reports if names is None else names)
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"config.sweep.reports: unknown reports {unknown}; "
                         f"expected from {sorted(_REGISTRY)}")
    return {name: importlib.import_module(_REGISTRY[name]).write(config, workdir) for name in names}

"""Paper A's regulator evidence with extra arms: argument parsing for
`cervix_jax.reports.regulator_evidence.write` (which `launch.py report` runs without extra arms).

    python launch.py sweep --config configs/patch.py:evidence --workdir runs/paper_a_evidence
    python scripts/regulator_evidence.py runs/paper_a_evidence --arm \
        iterative_minmax=runs/paper_a_evidence_minmax:model.regulator=iterative,model.refit_weighting=minmax
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # configs/ lives at the repo root


def parse_arm(text: str):
    """LABEL=WORKDIR[:key=value,...] -> (label, workdir, {dotted key: value})."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--arm: expected LABEL=WORKDIR[:key=value,...], found {text!r}")
    wd, _, spec = rest.partition(":")
    overrides = {}
    for kv in filter(None, spec.split(",")):
        k, _, v = kv.partition("=")
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    return label, Path(wd), overrides


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", nargs="?", default="runs/paper_a_evidence")
    ap.add_argument("--config", default="configs/patch.py:evidence")
    ap.add_argument("--arm", action="append", default=[], metavar="LABEL=WORKDIR[:key=value,...]",
                    help="an extra arm: the seeds of another sweep (e.g. one knob changed), paired "
                         "with none and iterative; e.g. iterative_minmax=runs/paper_a_evidence_minmax:"
                         "model.regulator=iterative,model.refit_weighting=minmax")
    ap.add_argument("--no-explain", dest="explain", action="store_false",
                    help="fail instead of running the explainer on points without explain/")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()

    from cervix_jax.reports import regulator_evidence
    from cervix_jax.train.config import load_config

    out = regulator_evidence.write(load_config(args.config), args.workdir,
                                   arms=[parse_arm(a) for a in args.arm], explain=args.explain,
                                   n_boot=args.n_boot)
    print(Path(out["markdown"]).read_text())


if __name__ == "__main__":
    main()

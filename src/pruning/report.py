"""Collect pruning cells from many run directories into arrays, and the prunability report.

Arrays have the seed's layout [nets, ratios, repetitions, methods]: a net is one reference
(identified by its config digest: seed=0,1,2 gives three nets), a method is a pruning method
(suffixed '/<mode>' for cascades), ratios are the keep targets, largest first. Missing cells are
NaN. Cells of one experiment may come from any number of run directories (jobs of a multirun,
other machines): the collector merges them and refuses a cell that two directories both hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.core.errors import ConfigError
from src.core.files import clean, read_json

# Tolerances of the prunability report, in percentage points of top-1 test error (the seed's list).
DELTAS = (-10.0, -5.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
METRICS = ("test_top1_err", "test_top5_err", "test_loss", "keep", "flops_kept_fraction",
           "params_kept", "speedup")  # speedup: measured, structured methods only (else NaN)
REFERENCE_METRICS = ("test_top1_err", "test_top5_err", "test_loss", "params_prunable", "flops")


@dataclass
class PruningResults:
    nets: list[str]  # reference config digests
    methods: list[str]
    keep_targets: list[float]  # largest first
    repetitions: int
    cells: dict[str, np.ndarray]  # metric -> [nets, ratios, repetitions, methods]
    reference: dict[str, np.ndarray]  # metric -> [nets]

    def mean(self, metric: str) -> np.ndarray:
        """[ratios, methods]: mean over nets and repetitions (NaN where no cell ran)."""
        values = self.cells[metric]
        count = np.sum(~np.isnan(values), axis=(0, 2))
        total = np.nansum(values, axis=(0, 2))
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def method_label(record: dict) -> str:
    return record["method"] if record["mode"] == "retrain" else (
        f"{record['method']}/{record['mode']}")


def from_records(references: dict[str, dict], records: list[dict]) -> PruningResults:
    """Arrays from cell records (cells/*.json) and reference records keyed by their digest."""
    nets = sorted(references)
    methods = sorted({method_label(r) for r in records})
    targets = sorted({round(r["keep_target"], 9) for r in records}, reverse=True)
    reps = 1 + max((r["repetition"] for r in records), default=0)
    shape = (len(nets), len(targets), reps, len(methods))
    cells = {m: np.full(shape, np.nan) for m in METRICS}
    seen: dict[tuple, str] = {}
    for r in records:
        at = (nets.index(r["reference_digest"]), targets.index(round(r["keep_target"], 9)),
              r["repetition"], methods.index(method_label(r)))
        if at in seen:
            raise ConfigError(f"cell {method_label(r)} rep {r['repetition']} keep "
                              f"{r['keep_target']} is in two runs ({seen[at]} and "
                              f"{r.get('_from', '?')}): select one experiment with runs=")
        seen[at] = r.get("_from", "?")
        for m in METRICS:
            cells[m][at] = np.nan if r.get(m) is None or r["status"] != "completed" else r[m]
    reference = {m: np.array([references[n][m] for n in nets], dtype=float)
                 for m in REFERENCE_METRICS}
    return PruningResults(nets, methods, targets, reps, cells, reference)


def collect(run_dirs: list[Path]) -> PruningResults:
    """Merge the cells of every pruning run directory in `run_dirs` (those holding cells/)."""
    references: dict[str, dict] = {}
    records: list[dict] = []
    for run_dir in run_dirs:
        ref_file = Path(run_dir) / "reference.json"
        if not ref_file.is_file():
            continue
        ref = read_json(ref_file)
        references[ref["reference_digest"]] = ref
        for path in sorted((Path(run_dir) / "cells").glob("*.json")):
            records.append({**read_json(path), "_from": str(run_dir)})
    if not records:
        raise ConfigError("no pruning cell found: point runs= at the run directories of "
                          "train.py pruning=<method> (each holds cells/*.json)")
    return from_records(references, records)


def within(reference_err: float, pruned: np.ndarray, err: np.ndarray, delta: float) -> int | None:
    """Index of the largest prune ratio whose error is at most reference_err + delta/100.

    pruned, err: [ratios], fraction of weights pruned and top-1 error in [0, 1] (NaN: no cell).
    Returns -1 if only the unpruned reference (prune ratio 0) qualifies, None if nothing does.
    """
    ok = np.flatnonzero(err <= reference_err + delta / 100.0 + 1e-12)
    if len(ok):
        return int(ok[np.argmax(pruned[ok])])
    return -1 if delta >= 0 else None


def prunability(results: PruningResults, deltas: tuple[float, ...] = DELTAS) -> list[dict]:
    """Per method and tolerance: the largest prune ratio within the reference error + delta,
    with its top-1 error, parameters kept and FLOPs kept (means over nets and repetitions)."""
    ref_err = float(np.mean(results.reference["test_top1_err"]))
    err, keep = results.mean("test_top1_err"), results.mean("keep")
    flops, params = results.mean("flops_kept_fraction"), results.mean("params_kept")
    speed = results.mean("speedup") if "speedup" in results.cells else np.full_like(err, np.nan)
    rows = []
    for j, method in enumerate(results.methods):
        for delta in deltas:
            i = within(ref_err, 1.0 - keep[:, j], err[:, j], delta)
            row: dict[str, Any] = {"method": method, "delta": delta,
                                   "reference_top1_err": ref_err}
            if i is None:
                row.update(prune_ratio=None, top1_err=None, keep=None, params_kept=None,
                           flops_kept_fraction=None, speedup=None)
            elif i < 0:
                row.update(prune_ratio=0.0, top1_err=ref_err, keep=1.0,
                           params_kept=float(np.mean(results.reference["params_prunable"])),
                           flops_kept_fraction=1.0,
                           speedup=None if np.isnan(speed[:, j]).all() else 1.0)
            else:
                row.update(prune_ratio=float(1.0 - keep[i, j]), top1_err=float(err[i, j]),
                           keep=float(keep[i, j]), params_kept=float(params[i, j]),
                           flops_kept_fraction=float(flops[i, j]),
                           speedup=None if np.isnan(speed[i, j]) else float(speed[i, j]))
            rows.append(row)
    return rows


def prune_potential(reference: dict, records: list[dict], delta: float = 0.5) -> float:
    """Largest fraction of prunable weights removed within reference error + delta (in %), for the
    cells of one run (mean over its repetitions); 0 if no pruned cell is within it."""
    if not records:
        return 0.0
    results = from_records({reference["reference_digest"]: reference}, records)
    return max(row["prune_ratio"] or 0.0 for row in prunability(results, (delta,)))


def markdown(rows: list[dict]) -> str:
    """The report as a table: one row per delta, one column per method, 'pruned % (error %)'."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    deltas = list(dict.fromkeys(r["delta"] for r in rows))
    ref = rows[0]["reference_top1_err"] if rows else float("nan")
    by = {(r["method"], r["delta"]): r for r in rows}
    lines = [f"Prunability: largest fraction of prunable weights removed with top-1 test error at "
             f"most the reference's {100 * ref:.2f}% + delta (pruned % (error %), and the "
             f"exported network's measured inference speed-up for structured methods).", "",
             "| delta (%) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for d in deltas:
        cells = []
        for m in methods:
            r = by[(m, d)]
            speed = "" if r.get("speedup") is None else f", {r['speedup']:.2f}x"
            cells.append("n/a" if r["prune_ratio"] is None else
                         f"{100 * r['prune_ratio']:.1f} ({100 * r['top1_err']:.2f}{speed})")
        lines.append(f"| {d:+g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(results: PruningResults, rows: list[dict], out_dir: Path) -> list[Path]:
    """pruning_arrays.npz and .json (arrays and their axes), prunability.json and .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = {"nets": np.array(results.nets), "methods": np.array(results.methods),
            "keep_targets": np.array(results.keep_targets)}
    npz = out_dir / "pruning_arrays.npz"
    np.savez(npz, **axes, **{f"cells_{k}": v for k, v in results.cells.items()},
             **{f"reference_{k}": v for k, v in results.reference.items()})
    as_json = {"axes": ["nets", "ratios", "repetitions", "methods"], "nets": results.nets,
               "methods": results.methods, "keep_targets": results.keep_targets,
               "repetitions": results.repetitions,
               "cells": {k: v.tolist() for k, v in results.cells.items()},
               "reference": {k: v.tolist() for k, v in results.reference.items()}}
    paths = [npz, out_dir / "pruning_arrays.json", out_dir / "prunability.json",
             out_dir / "prunability.md"]
    paths[1].write_text(json.dumps(clean(as_json), indent=1) + "\n")
    paths[2].write_text(json.dumps(clean(rows), indent=1) + "\n")
    paths[3].write_text(markdown(rows))
    return paths

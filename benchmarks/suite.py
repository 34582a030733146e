"""The CPU benchmark suite (`make bench`): every benchmark at CPU sizes, each writing its JSON to
benchmarks/results/cpu/, then one Markdown table of their headline ratios written into
benchmarks/README.md between the `bench:start` and `bench:end` markers.

    .venv/bin/python benchmarks/suite.py                      # the whole suite (about 20 minutes)
    .venv/bin/python benchmarks/suite.py --only pruning evaluation
    .venv/bin/python benchmarks/suite.py --quick --out /tmp/b --readme /tmp/b/README.md  # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import machine  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# name -> (arguments at CPU size, arguments of --quick)
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "evaluation": (["--model", "resnet20", "--images", "256", "--batch", "128", "--pairs", "5"],
                   ["--model", "mlp", "--images", "64", "--batch", "32", "--pairs", "2"]),
    "pruning": (["--models", "resnet20", "--keep", "0.5", "0.2", "--pairs", "7", "--samples",
                 "32"],
                ["--models", "bn_cnn", "--keep", "0.5", "--pairs", "2", "--batch", "8"]),
    "compression": (["--models", "mnist_cnn", "resnet20", "--samples", "768", "--epochs", "2",
                     "--rounds", "5"],
                    ["--models", "mlp", "--batch", "16", "--samples", "256", "--epochs", "2",
                     "--packing-elements", "65536", "--rounds", "2"]),
    "regimes": (["--steps", "1000", "--pairs", "5", "--ntk-n", "128"],
                ["--steps", "100", "--pairs", "2", "--ptr", "512", "--ntk-n", "8", "--width",
                 "16", "--depth", "2", "--inputs", "10"]),
    "stacked": (["--setups", "perceptron", "zero_loss", "records", "--steps", "3000", "--images",
                 "3000", "--rounds", "3"],
                ["--setups", "perceptron", "--runs", "3", "--steps", "50", "--ptr", "256",
                 "--rounds", "1"]),
    "tune": ([], ["--trials", "4", "--epochs", "2"]),
    "image_folder": (["--images", "50000", "--batches", "200", "--steps", "10", "--rounds", "3"],
                     ["--images", "300", "--batch", "32", "--batches", "4", "--steps", "2",
                      "--rounds", "1"]),
    "throughput": (["--models", "resnet20", "--images", "768", "--eval-images", "200", "--epochs",
                    "2", "--rounds", "5"],
                   ["--models", "mlp", "--batches", "32", "--images", "300", "--epochs", "1",
                    "--rounds", "2"]),
}


def _spread(r: dict, key: str) -> str:
    low, high = r.get(f"{key}_min"), r.get(f"{key}_max")
    return "-" if low is None else f"{low:.2f} - {high:.2f}"


def rows_evaluation(d: dict) -> list[list[str]]:
    return [["evaluation", f"{d['model']}: {d['states']} states x 3 splits of "
             f"{d['images_per_split']}, all together vs one at a time",
             f"{d['speedup']:.2f}x", _spread(d, "speedup"), f"{d['pairs']} alternating pairs"]]


def rows_pruning(d: dict) -> list[list[str]]:
    return [["pruning", f"{r['model']} {r['method']} keep {r['keep']:.2f} (FLOPs kept "
             f"{r['flops_kept_fraction']:.2f}): exported vs unpruned inference",
             f"{r['speedup']:.2f}x", _spread(r, "speedup"),
             f"{r['speed_pairs']} alternating pairs"] for r in d["rows"]]


def rows_compression(d: dict) -> list[list[str]]:
    out = []
    for r in d["training"]:
        how = f"median epoch, {r['rounds']} rotating rounds"
        what = f"{r['model']}: time per sample, 1-bit vote x{r['workers']}"
        for key, name in (("fused", "fused"), ("eager", "eager")):
            if key in r:
                out.append(["compression", f"{what} ({name}) vs SGD", f"{r[key]['ratio']:.2f}x",
                            _spread(r[key], "ratio"), how])
        if "fused_speedup" in r:
            out.append(["compression", f"{r['model']}: vote x{r['workers']} training, fused vs "
                        "eager (speed-up)",
                        f"{r['fused_speedup']['ratio']:.2f}x",
                        _spread(r["fused_speedup"], "ratio"), how])
    return out


def rows_regimes(d: dict) -> list[list[str]]:
    r = d["compiled_speedup"]
    return [["regimes", "perceptron SGD step, compiled vs eager", f"{r['ratio']:.2f}x",
             _spread(r, "ratio"), f"{r['pairs']} alternating pairs"]]


def rows_throughput(d: dict) -> list[list[str]]:
    out = []
    for r in d["rows"]:
        what, how = f"{r['model']} batch {r['batch']}", f"{r['rounds']} rotating rounds"
        for key, label in (("vs_standard", "ours vs the standard pipeline"),
                           ("vs_bare", "ours vs a bare loop"),
                           ("ema5_cost", "time per image with EMA x5 vs without"),
                           ("compiled_vs_eager", f"compiled ({r.get('compile_mode')}) vs eager")):
            if key not in r:
                continue
            out.append(["throughput", f"{what}: {label}", f"{r[key]['ratio']:.2f}x",
                        _spread(r[key], "ratio"), how])
    return out


def rows_stacked(d: dict) -> list[list[str]]:
    out = []
    for r in d["results"]:
        if r["setup"] == "zero_loss":
            out.append(["stacked", f"{r['runs']} perceptrons to zero loss ({r['steps_min']} to "
                        f"{r['steps_max']} steps) in {r['slots']} slots: occupancy while jobs "
                        f"waited (overall {100 * r['occupancy']:.0f}%)",
                        f"{100 * r['occupancy_while_jobs_waited']:.0f}%", "-", "one sweep"])
            continue
        what = {"perceptron": "regimes perceptron grid", "records": "mnist_mlp record grid",
                "resnet20": "ResNet-20 seeds"}[r["setup"]]
        out.append(["stacked", f"{what}: samples/s, stacked vs the best of basic and joblib "
                    f"({', '.join(r['stacked_step'])} step)",
                    f"{r['stacked_vs_best']['ratio']:.2f}x", _spread(r["stacked_vs_best"], "ratio"),
                    f"{r['rounds']} rotating rounds"])
    return out


def rows_tune(d: dict) -> list[list[str]]:
    size, p, lanes = f"{d['trials']} trials x {d['epochs']} epochs", d["pruners"], d["lanes"]
    out = [["tune", f"{name} pruner: epochs trained vs no pruner ({size}; best val_acc "
            f"{p[name]['best_val_acc']:.1f} vs {p['none']['best_val_acc']:.1f})",
            f"{p[name]['epochs_vs_none']:.2f}x", "-", "one search each"]
           for name in ("median", "hyperband")]
    a, b = lanes["asynchronous"], lanes["batches"]
    out.append(["tune", f"2 trials in flight (median pruner): worker time idle, asynchronous "
                f"(in batches: {100 * b['waiting_share']:.0f}%; median gap between a worker's "
                f"trials {a['median_gap_s']:.2f} s vs {b['median_gap_s']:.2f} s)",
                f"{100 * lanes['asynchronous']['waiting_share']:.0f}%", "-", "one search each"])
    return out


def rows_image_folder(d: dict) -> list[list[str]]:
    data, e2e, first = d["delivery"], d["end_to_end"], d["first_read"]
    return [["image_folder", f"data delivery, {d['images']} 32x32 PNGs: ours device-resident vs "
             f"torchvision ImageFolder + DataLoader (2 workers)",
             f"{data['resident']['ratio']:.1f}x", _spread(data["resident"], "ratio"),
             f"{d['rounds']} rotating rounds"],
            ["image_folder", "data delivery: ours streamed from the uint8 cache (2 workers) vs "
             "the same", f"{data['streamed']['ratio']:.1f}x", _spread(data["streamed"], "ratio"),
             f"{d['rounds']} rotating rounds"],
            ["image_folder", f"ResNet-20 training steps fed by ours vs by torchvision's (the "
             f"model is {100 * e2e['model_share_of_step']:.0f}% of our step)",
             f"{e2e['resident']['ratio']:.2f}x", _spread(e2e["resident"], "ratio"),
             f"{d['rounds']} rotating rounds"],
            ["image_folder", f"first read: decode and cache at {first['cache_mb_s']:.1f} MB/s, "
             f"against reading the bytes at {first['read_only_mb_s']:.0f} MB/s",
             f"{first['share_of_read_speed']:.3f}", "-", "one read"]]


ROWS: dict[str, Callable[[dict], list[list[str]]]] = {
    "evaluation": rows_evaluation, "pruning": rows_pruning, "compression": rows_compression,
    "regimes": rows_regimes, "stacked": rows_stacked, "throughput": rows_throughput,
    "tune": rows_tune, "image_folder": rows_image_folder}


def table(results: dict[str, dict], info: dict, seconds: dict[str, float]) -> str:
    lines = [f"Measured by `make bench` on {info['platform']}, {info['cpus']} CPUs "
             f"({info['threads']} torch threads), Python {info['python']}, torch "
             f"{info['torch']}{', ' + info['gpu'] if 'gpu' in info else ''}; JSON in "
             f"benchmarks/results/cpu/.", "",
             "| benchmark | what | ratio | spread (min - max) | how |", "|---|---|---|---|---|"]
    for name, data in results.items():
        lines += ["| " + " | ".join(row) + " |" for row in ROWS[name](data)]
    lines += ["", "Seconds per benchmark: " + ", ".join(f"{n} {s:.0f}" for n, s in
                                                        seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def write_table(readme: Path, text: str) -> None:
    """Replace the text between the markers of `readme` (appended once if it has none)."""
    old = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{text}{END}"
    if START in old and END in old:
        new = old[:old.index(START)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n## The CPU suite (make bench)\n\n" + block + "\n"
    readme.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SUITE), default=list(SUITE))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu")
    parser.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    for name in args.only:
        out = args.out / f"{name}.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"),
               *SUITE[name][1 if args.quick else 0], "--device", "cpu", "--out", str(out)]
        print(f"== bench: {name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        seconds[name] = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench: {name} exited {proc.returncode}: {' '.join(cmd)}")
        results[name] = json.loads(out.read_text())
    text = table(results, machine(), seconds)
    write_table(args.readme, text)
    print(text)


if __name__ == "__main__":
    main()

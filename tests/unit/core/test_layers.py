"""The layout is the design: each package of src/ sits in a layer, and no module imports from a
layer above its own (README, Layout). Read from the source, every import, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"
LAYERS = {
    "core": 0,
    **dict.fromkeys(("data", "models", "optim", "averaging", "compression", "pruning",
                     "regimes"), 1),  # components
    "engine": 2,
    "lifecycle": 3,
    "tasks": 4,
    "sweeps": 5,
    "analysis": 5,
    "cli": 6,
}


def imports(path: Path) -> set[str]:
    """The src packages a module imports (module-level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        found |= {n.split(".")[1] for n in names if n.startswith("src.") and n.count(".") >= 1}
    return found


def test_every_package_of_src_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)
    assert not [p.name for p in SRC.glob("*.py") if p.name != "__init__.py"]  # no loose files


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        package = path.relative_to(SRC).parts[0]
        if package not in LAYERS:
            continue
        for used in imports(path):
            if LAYERS[used] > LAYERS[package]:
                upward.append(f"{path.relative_to(SRC)} -> src.{used}")
    assert upward == []

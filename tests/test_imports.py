"""The allowed imports of DESIGN.md ("Layout"), checked by walking every module's import statements."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atomicio", "wordtree", "yolo9000", "pipelines", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module the file imports (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


MODULES = {
    module_name(path): imports_of(path)
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def importers_of(prefix: str) -> set[str]:
    return {
        module
        for module, names in MODULES.items()
        if any(name == prefix or name.startswith(prefix + ".") for name in names)
    }


def test_the_walk_sees_the_packages():
    assert "wordtree.tree" in MODULES and "wordtree.darknet_files" in MODULES
    assert "wordtree.tree" in MODULES["wordtree.darknet_files"]


def test_wordtree_knows_nothing_of_yolo9000_or_torch():
    offenders = {m for m in importers_of("yolo9000") | importers_of("torch") if m.startswith("wordtree")}
    assert not offenders


def test_only_labelmap_and_the_set_up_code_import_wordtree_inside_yolo9000():
    allowed = ("yolo9000.data.labelmap", "yolo9000.train", "yolo9000.predict", "yolo9000.evaluate",
               "yolo9000.cli")
    offenders = {m for m in importers_of("wordtree") if m.startswith("yolo9000") and not m.startswith(allowed)}
    assert not offenders


def test_the_atomic_writer_imports_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    atomic = {module: names for module, names in MODULES.items() if module.startswith("atomicio")}
    assert atomic, "the walk should see atomicio"
    for module, names in atomic.items():
        assert not {n for n in names if n.split(".")[0] not in stdlib}, f"{module} imports {sorted(names)}"


def test_model_imports_only_torch_its_layers_and_the_atomic_writer():
    stdlib = set(sys.stdlib_module_names)
    for module, names in MODULES.items():
        if not module.startswith("yolo9000.model"):
            continue
        outside = {
            n for n in names
            if n.split(".")[0] not in stdlib | {"torch", "__future__", "atomicio"}
            and not n.startswith("yolo9000.model")
        }
        assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", ["yolo9000.hierarchy", "yolo9000.targets", "yolo9000.loss"])
def test_loss_side_never_reaches_into_data_or_training(module):
    names = MODULES.get(module, set())
    assert not {n for n in names if n.startswith(("yolo9000.data", "yolo9000.train", "wordtree"))}


def test_ray_appears_only_in_training_and_its_entry_point():
    offenders = {
        m for m in importers_of("ray")
        if not m.startswith("yolo9000.train") and m != "pipelines.train_9000"
    }
    assert not offenders


def test_nothing_imports_entry_points():
    entry_points = ("pipelines", "yolo9000.cli", "wordtree.cli")
    offenders = {m for prefix in entry_points for m in importers_of(prefix) if not m.startswith(entry_points)}
    assert not offenders

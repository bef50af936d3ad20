"""The layers, as the README's map draws them, each importing only the ones below it:

    meditrack.py   composition: may import anything
    handlers/      the application: web/, storage/, system
    settings.py    web/ (parsers it reuses), system
    web/           the mechanisms: system only, never the application or a store
    storage/       the stores: system only, never the web layer or the application
    system.py      what the operating system offers: nothing of the project

Read from each module's import statements (its syntax tree), imports inside functions
included, so a lazy import cannot slip past.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"meditrack", "settings", "system", "web", "handlers", "storage"}

# What each layer may import of the project, by top-level name.
ALLOWED = {
    "handlers": {"handlers", "web", "storage", "system"},
    "settings": {"web", "system"},
    "web": {"web", "system"},
    "storage": {"storage", "system"},
    "system": set(),
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    return {name.split(".")[0] for name in names} & PROJECT


def modules_of(layer: str) -> list[Path]:
    single = ROOT / f"{layer}.py"
    return [single] if single.exists() else sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    modules = modules_of(layer)
    assert modules, f"no modules found for {layer}"
    outside = {str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[layer]) for path in modules}
    assert {module: names for module, names in outside.items() if names} == {}


def test_every_product_module_belongs_to_a_layer():
    top_level = {path.stem for path in ROOT.glob("*.py")} | {path.name for path in ROOT.iterdir()
                                                             if (path / "__init__.py").exists()}
    assert top_level - {"meditrack", "bench"} == set(ALLOWED)  # bench/ is tooling, not product

"""The library's imports run down the pipeline only, and never reach Prefect.

Each module of ``lookalike/`` belongs to a layer; a module may import from its own layer and the
layers before it, never from a later one (read from the source with ``ast``, lazy imports inside
functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lookalike"
LAYERS = [  # in pipeline order: a layer may import only from itself and the layers above it
    {"core"}, {"data"}, {"encoder"}, {"search"}, {"privacy"}, {"audience"},
    {"build_steps", "build_report", "erasure", "object_store"},  # operations on a whole workdir
    {"evaluation"}, {"testing"}, {"__init__"},
]


def layer_of(module: str) -> int:
    """Layer index of a dotted module name under ``lookalike``."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in MODULES:
        assert 0 <= layer_of(module_name(path)) < len(LAYERS), path


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_pipeline(path: Path) -> None:
    here = layer_of(module_name(path))
    for line, imported in imports_of(path):
        assert not imported.split(".")[0] in {"prefect", "prefect_dask", "flows"}, (
            f"{path.name}:{line} imports {imported}: the library never imports the flows' stack"
        )
        if imported.startswith("lookalike.") or imported == "lookalike":
            assert layer_of(imported) <= here, (
                f"{path.relative_to(PACKAGE)}:{line} imports {imported}, a later stage "
                f"(layer {layer_of(imported)} after {here}: {LAYERS})"
            )


def test_the_layer_check_catches_a_backward_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from lookalike.audience.export import export_audience\n")
    assert imports_of(source) == [(2, "lookalike.audience.export")]
    assert layer_of("lookalike.audience.export") > layer_of("lookalike.encoder.train")

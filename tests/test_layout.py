"""Each part in its own room: the arrows between the parts, read from the imports.

Data flows one way, files → etl → PostGIS → layers → dashboard; geo is pure. The command line,
the demo's wiring and the benchmarks (``gridwatch/``) sit above all of them; settings, errors and
the system-package checks sit below, importing nothing of ours.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gridwatch
import gridwatch.dashboard
import gridwatch.data
import gridwatch.etl
import gridwatch.geo
import gridwatch.layers

PARTS = {name: Path(getattr(gridwatch, name).__file__).parent for name in ("geo", "etl", "layers", "dashboard", "data")}
# Settings, errors, the system set-up and secret files and TLS material, which every part may need.
BASE = {"gridwatch.settings", "gridwatch.errors", "gridwatch.system", "gridwatch.tls"}
# What each part may import besides itself and BASE.
ALLOWED = {
    "geo": set(),
    "etl": {"geo"},
    "layers": {"geo"},
    "dashboard": {"layers", "geo", "etl"},  # etl: its entry points for acknowledgements, the database engine
    "data": {"geo", "etl"},  # etl: the simulator replays sample files with the ETL's readers
}


def _imports(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports (absolute imports; relative ones stay in the part)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"gridwatch.{a.name}" for a in node.names} if node.module == "gridwatch" else {node.module}
    return {m for m in found if m == "gridwatch" or m.startswith("gridwatch.")}


def _target(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[1] in PARTS else ".".join(bits[:2])


@pytest.mark.parametrize("part", sorted(PARTS))
def test_a_part_imports_only_what_it_may(part: str) -> None:
    wrong = sorted(
        f"{path.relative_to(PARTS[part].parent)} imports {module}"
        for path in PARTS[part].rglob("*.py")
        for module in _imports(path)
        if _target(module) not in {part, *ALLOWED[part], *BASE}
    )
    assert wrong == []


def test_settings_errors_and_system_import_nothing_of_ours() -> None:
    base = Path(gridwatch.__file__).parent
    wrong = sorted(f"{name} imports {m}" for name in ("settings", "errors", "system")
                   for m in _imports(base / f"{name}.py"))
    assert wrong == []


def test_no_part_is_importable_under_a_bare_name() -> None:
    """They are gridwatch.geo, gridwatch.etl, ...: a bare ``import etl`` finds nothing of ours."""
    import importlib.util

    for name in PARTS:
        spec = importlib.util.find_spec(name)
        assert spec is None or not str(spec.origin or "").startswith(str(PARTS[name].parent)), name

"""The package's shape: the public API, the layers, and the few facts spelled in two places."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ai_secretary_schema
from ai_secretary_schema.migrator import PACKAGE_TABLES
from ai_secretary_schema.models import REQUIRED_TABLES

PACKAGE = Path(ai_secretary_schema.__file__).parent
#: Modules that may import Flask: the Flask layer only.
FLASK_LAYER = PACKAGE / "flask"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


CORE_MODULES = sorted(path for path in PACKAGE.rglob("*.py") if FLASK_LAYER not in path.parents)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_never_imports_flask(path: Path) -> None:
    flask_imports = {
        name
        for name in _imports(path)
        if name.split(".")[0] in ("flask", "flask_migrate", "flask_sqlalchemy")
        or name.startswith("ai_secretary_schema.flask")
    }
    # __init__.py names the Flask layer's classes for type checkers only (lazy exports).
    if path.name == "__init__.py" and path.parent == PACKAGE:
        flask_imports -= {name for name in flask_imports if name.startswith("ai_secretary_schema.")}

    assert flask_imports == set()


def test_all_names_exactly_the_lazy_exports() -> None:
    exports = set(ai_secretary_schema._EXPORTS)

    assert set(ai_secretary_schema.__all__) == exports | {"__version__"}


@pytest.mark.parametrize("name", sorted(ai_secretary_schema._EXPORTS))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(ai_secretary_schema, name) is not None


def test_the_warm_starts_table_list_is_the_models() -> None:
    assert PACKAGE_TABLES == REQUIRED_TABLES

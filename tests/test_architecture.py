"""The package's shape (docs/ARCHITECTURE.md): layers only import downwards, no import cycles,
and no module reaches into another module's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "slimbert"


def test_import_linter_contracts_hold():
    """[tool.importlinter] in pyproject.toml: the layers contract and the no-cycles contract."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports() -> list[str]:
    """`from slimbert.x import _name` where x is not the importing module itself."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slimbert"):
                for alias in node.names:
                    if alias.name.startswith("_") and node.module != here:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_private_import_check_can_fail(tmp_path, monkeypatch):
    """The check above sees a private import when there is one."""
    fake = tmp_path / "src" / "slimbert"
    fake.mkdir(parents=True)
    (fake / "a.py").write_text("from slimbert.b import _helper\n")
    (fake / "b.py").write_text("def _helper(): pass\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert private_imports() == ["src/slimbert/a.py:1: slimbert.b._helper"]


def _slimbert_imports(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.lineno, node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slimbert"
            for alias in node.names]


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmark_scripts_import_names_that_exist(script):
    """Every `from slimbert... import name` in a benchmark script (at any depth, so also the ones
    inside functions) still names something: the scripts follow the package as it changes."""
    import importlib

    for line, module, name in _slimbert_imports(script):
        imported = importlib.import_module(module)
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{script.name}:{line}: {module} has no {name}"

"""The import rule (CONTRIBUTING.md): no import cycle among the project's modules; project modules
import each other at the top of a file; only heavy third-party libraries are imported inside
functions, so the scoring and report commands start without them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = ("selfcorrect", "train", "eval", "data_gen")
# Code under these folders follows the rule too (scripts and benchmarks are entry points, not modules).
CHECKED = (*PACKAGES, "scripts")
# Importing any of these costs seconds or pulls torch in; a function that needs one imports it itself.
HEAVY = {
    "accelerate",
    "bitsandbytes",
    "datasets",
    "deepspeed",
    "huggingface_hub",
    "matplotlib",
    "peft",
    "safetensors",
    "torch",
    "transformers",
    "trl",
    "vllm",
    "wandb",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (Path(ROOT) / pkg).rglob("*.py")}


def imported_names(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import statement binds, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        # `from pkg import sub` may name a submodule: count both the package and pkg.sub
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in the file (a function-level import counts)."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            for imported in imported_names(node, package):
                target = owner(imported)
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> b -> ... -> a, or None.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of each import statement inside a function."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found.append((node.lineno, "." if node.level else (node.module or "").split(".")[0]))
    return sorted(set(found))


def test_find_cycle_reports_the_loop_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    modules = {"pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    assert find_cycle(import_graph(modules)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_the_project_has_no_import_cycle():
    cycle = find_cycle(import_graph(project_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_heavy_libraries_are_imported_inside_functions():
    offenders = []
    for folder in CHECKED:
        for path in sorted((Path(ROOT) / folder).rglob("*.py")):
            for line, module in function_level_imports(path):
                if module not in HEAVY:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "import these at the top of the file:\n" + "\n".join(offenders)


def test_no_module_imports_from_a_main():
    offenders = [
        f"{name} imports {target}"
        for name, targets in import_graph(project_modules()).items()
        for target in targets
        if target.endswith("__main__")
    ]
    scripts = [p for p in (Path(ROOT) / "scripts").glob("*.py") if "__main__ import" in p.read_text()]
    assert not offenders and not scripts, offenders + [str(p) for p in scripts]


def test_scoring_and_report_commands_start_without_the_heavy_libraries():
    code = (
        "import sys, eval.compare, eval.report, eval.aggregate, eval.metrics\n"
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

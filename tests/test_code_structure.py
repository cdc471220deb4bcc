"""The shape of the code, kept: packages import one another in one direction, and functions stay short.

A package loop (backends -> model -> backends) means neither can be understood, tested or moved alone. Lazy
imports inside functions count too: they are the same dependency, only later."""

import ast
from collections import defaultdict
from pathlib import Path

import lesionseg

PACKAGE = Path(lesionseg.__file__).parent


def package_of(module: str) -> str:
    """`lesionseg.backends.onnx_backend` -> `backends`; a top-level module is its own package."""
    return module.split(".")[1]


def imports_between_packages() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the modules whose imports make that edge."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        module = ".".join(("lesionseg", *parts))
        if len(parts) == 1 and parts[0] == "__init__":
            continue  # `import lesionseg` itself: the lazy API, which may name anything
        source = package_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lesionseg."):
                target = package_of(node.module)
                if target != source:
                    edges[source][target].add(module)
    return edges


def test_no_package_imports_one_that_imports_it_back():
    edges = imports_between_packages()

    def reaches(start: str, goal: str) -> bool:
        seen, waiting = set(), [start]
        while waiting:
            package = waiting.pop()
            if package == goal:
                return True
            if package not in seen:
                seen.add(package)
                waiting.extend(edges.get(package, {}))
        return False

    loops = [
        f"{source} -> {target} (in {', '.join(sorted(modules))}) and back"
        for source, targets in edges.items()
        for target, modules in targets.items()
        if reaches(target, source)
    ]
    assert not loops, "\n".join(sorted(loops))


LONGEST_FUNCTION_LINES = 80


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)

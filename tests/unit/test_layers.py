"""The layer rule (docs/design.md), enforced: imports go down the data path, never up, and never in a cycle.

ground (``codebrain_seg`` core) <- ``planners`` <- ``trainers`` | ``codebrain_seg.inference`` <- ``codebrain_seg.run``
<- ``evaluation`` <- entry points (``codebrain_seg.cli``, ``codebrain_seg.demo``, ``benchmarks``).

Every import counts, the ones inside functions too. An import inside a function is allowed only for an optional
or heavy dependency and says so in a ``# lazy: <reason>`` comment on its line or on the line above its block.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("codebrain_seg", "planners", "trainers", "evaluation", "benchmarks")
# (module prefix, layer rank, group): the longest matching prefix decides. Two groups of one rank (trainers and
# inference) may not import each other.
LAYERS: tuple[tuple[str, int, str], ...] = (
    ("codebrain_seg", 0, "ground"),
    ("planners", 1, "planners"),
    ("trainers", 2, "trainers"),
    ("codebrain_seg.inference", 2, "inference"),
    ("codebrain_seg.run", 3, "run"),
    ("evaluation", 4, "evaluation"),
    ("codebrain_seg.cli", 5, "entry"),
    ("codebrain_seg.demo", 5, "entry"),
    ("benchmarks", 5, "entry"),
)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    marked_lazy: bool


def layer_of(module: str, layers=LAYERS) -> tuple[int, str]:
    """``(rank, group)`` of a module by its longest matching prefix."""
    best = max((prefix for prefix, _, _ in layers if module == prefix or module.startswith(prefix + ".")), key=len)
    return next((rank, group) for prefix, rank, group in layers if prefix == best)


def find_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the packages under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _lazy_marked(lines: list[str], lineno: int) -> bool:
    """A ``# lazy:`` comment on the import's line or above the block of imports it belongs to."""
    if "# lazy:" in lines[lineno - 1]:
        return True
    index = lineno - 2
    while index >= 0:
        text = lines[index].strip()
        if text.startswith("# lazy:"):
            return True
        if not (text.startswith(("from ", "import ", ")")) or text.endswith((",", "(")) or text == ""):
            return False
        index -= 1
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import statement of a module, resolved to project modules (or ``ext:<name>`` for others)."""
    text = path.read_text()
    tree, lines = ast.parse(text), text.splitlines()
    in_function = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            continue
        for options in candidates:
            target = next((option for option in options if option in modules), None)
            if target is None and options[-1].split(".")[0] in (p.split(".")[0] for p in modules):
                parts = options[-1].split(".")
                target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules),
                              None)
            found.append(Import(name, target or f"ext:{options[-1]}", node.lineno, id(node) in in_function,
                                _lazy_marked(lines, node.lineno)))
    return found


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each as a list of modules), by depth-first search."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def check_layers(root: Path, packages=PACKAGES, layers=LAYERS) -> list[str]:
    """Every violation of the layer rule under ``root``: upward or sideways imports, cycles, unmarked lazy imports."""
    modules = find_modules(root, packages)
    problems, edges = [], {}
    for name, path in modules.items():
        for item in imports_of(name, path, modules):
            where = f"{path.relative_to(root)}:{item.line}"
            if item.in_function and not item.marked_lazy:
                problems.append(f"{where}: import of {item.target} inside a function without a '# lazy:' reason")
            if item.target.startswith("ext:") or item.target == name:
                continue
            # A package's own submodules are below it (its __init__ re-exports them).
            if item.target.startswith(name + "."):
                edges.setdefault(name, set()).add(item.target)
                continue
            edges.setdefault(name, set()).add(item.target)
            (rank, group), (target_rank, target_group) = layer_of(name, layers), layer_of(item.target, layers)
            if target_rank > rank or (target_rank == rank and target_group != group):
                problems.append(f"{where}: {name} ({group}) imports {item.target} ({target_group}), which is "
                                f"{'above' if target_rank > rank else 'beside'} it")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(edges)]
    return problems


def test_the_project_follows_the_layer_rule():
    assert check_layers(REPO) == []


def test_the_checker_finds_an_upward_import_a_cycle_and_an_unmarked_lazy_import(tmp_path):
    def write(relative: str, text: str) -> None:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)

    for package in PACKAGES:
        write(f"{package}/__init__.py", "")
    write("codebrain_seg/io.py", "import json\n")
    write("planners/plans.py", "from codebrain_seg.io import json\n")  # downwards: fine
    assert check_layers(tmp_path) == []
    write("codebrain_seg/paths.py", "from planners.plans import json\n")  # ground imports planners: upwards
    write("trainers/loop.py", "def run():\n    from codebrain_seg.inference import predictor\n")  # sideways, unmarked
    write("codebrain_seg/inference/__init__.py", "")
    write("codebrain_seg/inference/predictor.py", "# lazy: the test's reason\n")
    write("evaluation/a.py", "from evaluation import b\n")
    write("evaluation/b.py", "def f():\n    # lazy: marked, still a cycle\n    from evaluation import a\n")
    problems = check_layers(tmp_path)
    assert any("codebrain_seg/paths.py:1" in p and "which is above it" in p for p in problems), problems
    assert any("trainers/loop.py:2" in p and "beside it" in p for p in problems), problems
    assert any("trainers/loop.py:2" in p and "without a '# lazy:' reason" in p for p in problems), problems
    assert any(p.startswith("import cycle:") and "evaluation.a" in p and "evaluation.b" in p for p in problems)
    assert len(problems) == 4, problems


def test_layer_of_takes_the_longest_prefix():
    assert layer_of("codebrain_seg.io") == (0, "ground")
    assert layer_of("codebrain_seg.inference.codebrain") == (2, "inference")
    assert layer_of("codebrain_seg.cli.impute") == (5, "entry")
    assert layer_of("trainers.copedit.stage1") == (2, "trainers")

"""The package's shape, checked from its source: the numerics (centerloss_cli/core) import nothing from the
rest; imports go from higher layers to lower ones only (so there is no cycle); no module is over about 400
lines, no function over 50, no block nested deeper than 4; no module keeps mutable state at module level.

`python tests/test_architecture.py` prints the counts: modules, import arrows, the longest function, the
deepest nesting and lines over 120 characters."""
import ast
import inspect
from pathlib import Path

import centerloss_cli

PACKAGE = Path(centerloss_cli.__file__).parent
CORE = "core"
# The package's top level holds its entry points and the errors every module may raise; everything else sits
# in a wing, bottom up: the numerics, then the machinery by role. A module imports only from its own wing and
# the wings below it (and errors); the entry points import what they run.
ENTRY_POINTS = {"__init__", "__main__", "cli", "child"}
TOP_LEVEL = ENTRY_POINTS | {"errors"}
WINGS = [
    "core",  # the numerics: the paper and nothing of the machinery
    "settings",  # declaring, converting, naming and checking settings; devices and precision; the voice
    "procs",  # stop signals and child processes
    "dataset",  # fetching and reading MNIST and Fashion-MNIST
    "rundir",  # the run folder: its files, records, lock, life; list
    "plots",  # figures, charts, the plotting processes, results pages, TensorBoard
    "engine",  # training: the runtime, the epoch loop, what an epoch commits
    "launch",  # sweeps: in turn, in worker processes, on Slurm
]
MAX_CHAIN = 9  # modules on the longest chain of imports that run when a module loads (__main__ -> ... -> a leaf)
# Caches of what a class declares, never of a run's data: a config is built and checked field by field, and
# reading the annotations each time made resolving a config 35 ms slower.
PURE_CACHES = {("settings.schema", "schema"), ("settings.schema", "field_types")}
MAX_FUNCTION_LINES = 50  # of a function's body, its docstring included (a CLI command's options are its signature)
MAX_NESTING = 4  # blocks (if, for, while, with, try, match) inside one another within a function
BLOCKS = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.Match, ast.AsyncFor, ast.AsyncWith)


def module_name(path: Path) -> str:
    """core/step.py -> "core.step"; core/__init__.py -> "core"; __init__.py stays "__init__"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str], typing: bool = True) -> set[str]:
    """The package's modules that module `name` imports, wherever in it the import stands; without `typing`,
    less those imported for type hints only (under `if TYPE_CHECKING:`), which never run."""
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found = set()
    tree = ast.parse(path.read_text())
    hints = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
             for n in ast.walk(node)}
    for node in ast.walk(tree):
        if not typing and id(node) in hints:
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
        elif (node.module or "").startswith("centerloss_cli."):
            base = node.module.split(".")[1:]
        else:
            continue
        target = ".".join(base)
        found |= {target} & known  # from .core.step import x
        found |= {f"{target}.{a.name}".lstrip(".") for a in node.names} & known  # from .core import step
    return found - {name}


def imports(typing: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (without `typing`: at run time)."""
    known = modules()
    return {name: imported(name, path, set(known), typing) for name, path in known.items()}


def wing(module: str) -> str:
    return module.split(".")[0] if "." in module or module in WINGS else module


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest path of imports in an acyclic graph, as module names."""
    memo: dict[str, list[str]] = {}

    def down(m: str) -> list[str]:
        if m not in memo:
            memo[m] = [m] + max((down(n) for n in graph[m]), key=len, default=[])
        return memo[m]

    return max((down(m) for m in graph), key=len)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def core_leaks(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from the numerics into the rest of the package."""
    inside = lambda m: m == CORE or m.startswith(CORE + ".")  # noqa: E731
    return sorted((m, n) for m, deps in graph.items() if inside(m) for n in deps if not inside(n))


def nesting(node: ast.AST, depth: int = 0) -> int:
    """The deepest nesting of blocks in `node`, not counting the functions and classes defined inside it."""
    deepest = depth
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            deepest = max(deepest, nesting(child, depth + isinstance(child, BLOCKS)))
    return deepest


def functions(source: str) -> list[tuple[str, int, int]]:
    """(name, body lines, nesting) of every function and method in `source`."""
    return [(n.name, n.end_lineno - n.body[0].lineno + 1, nesting(n)) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_imports_have_no_cycle_and_go_down_the_wings_only():
    graph = imports()
    assert find_cycle(graph) is None, find_cycle(graph)
    strays = sorted(m for m in graph if wing(m) not in WINGS and m not in TOP_LEVEL)
    assert not strays, f"modules in no wing and not an entry point: {strays}"
    assert len([m for m in graph if m in TOP_LEVEL]) <= 8, "the top level holds the entry points only"
    rank = {w: i for i, w in enumerate(WINGS)}
    upward = sorted((m, n) for m, deps in graph.items() if m not in TOP_LEVEL for n in deps
                    if n not in TOP_LEVEL - ENTRY_POINTS and (n in ENTRY_POINTS or rank[wing(n)] > rank[wing(m)]))
    assert not upward, f"imports up the wings: {upward}"
    assert not graph["errors"], "errors imports nothing of the package"


def test_no_chain_of_imports_is_longer_than_about_8_modules():
    chain = longest_chain(imports(typing=False))
    assert len(chain) <= MAX_CHAIN, " -> ".join(chain)


def test_the_numerics_import_nothing_from_the_rest_of_the_package():
    graph = imports()
    assert graph["core.step"] >= {"core.center_loss", "core.solver"}  # the reader sees core's imports
    assert not core_leaks(graph), f"the numerics import the machinery: {core_leaks(graph)}"
    for p in (PACKAGE / CORE).glob("*.py"):  # nor print: what a user reads is the machinery's to say
        assert "print(" not in p.read_text(), p.name


def test_the_checks_find_a_cycle_a_leak_a_long_function_and_deep_nesting(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert core_leaks({"core.step": {"core.model", "runfiles"}, "loop": {"core.step"}}) == [("core.step", "runfiles")]
    nested = "def f():\n" + "".join("    " * (i + 1) + "if x:\n" for i in range(5)) + "    " * 6 + "pass\n"
    long = "def g():\n" + "    x = 1\n" * 51
    assert functions(nested) == [("f", 6, 5)]
    assert functions(long) == [("g", 51, 0)]
    source = tmp_path / "m.py"
    source.write_text("from .core import step\nfrom .core.model import LeNetPP\nfrom . import runs\n")
    assert imported("x", source, {"core", "core.step", "core.model", "runs"}) == {"core", "core.step", "core.model",
                                                                                "runs"}


def test_no_function_is_over_50_lines_nor_nested_deeper_than_4():
    too_long, too_deep = [], []
    for name, path in modules().items():
        for function, lines, depth in functions(path.read_text()):
            if lines > MAX_FUNCTION_LINES:
                too_long.append(f"{name}.{function}: {lines} lines")
            if depth > MAX_NESTING:
                too_deep.append(f"{name}.{function}: nested {depth} deep")
    assert not too_long and not too_deep, too_long + too_deep


def test_no_module_is_over_about_400_lines_or_keeps_mutable_module_state():
    for name, p in modules().items():
        text = p.read_text()
        assert len(text.splitlines()) <= 420, name
        tree = ast.parse(text)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{name} rebinds a module global"
        for node in tree.body:  # no module-level list/dict/set that code could fill, nor a cache of data
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.List, ast.Dict, ast.Set)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                assert all(n.isupper() or n == "__all__" for n in names), f"{name}: mutable module state {names}"
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                cached = any("cache" in d for d in decorators) and (name, node.name) not in PURE_CACHES
                assert not cached, f"{name}: {node.name} caches at module level"


def test_the_developers_map_names_every_module_and_wing():
    text = (PACKAGE.parent / "docs" / "developers.md").read_text()
    named = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    named |= {f"{w}/" for w in WINGS} | {"__init__.py"}
    missing = sorted(n for n in named if f"`{n}`" not in text)
    assert not missing, f"docs/developers.md does not name {missing}"


def test_train_is_a_plain_function():
    from centerloss_cli import train

    assert inspect.isfunction(train) and train.__module__ == "centerloss_cli.engine.training"


def shape() -> dict[str, object]:
    """The counts the developers' map and the review notes quote."""
    graph = imports()
    found = [(lines, depth, f"{name}.{function}") for name, path in modules().items()
             for function, lines, depth in functions(path.read_text())]
    longest, deepest = max(found), max(found, key=lambda f: f[1])
    long_lines = sum(len(line) > 120 for p in modules().values() for line in p.read_text().splitlines())
    return {"modules": len(graph), "numerics modules": sum(m.startswith(CORE) for m in graph),
            "import arrows": sum(map(len, graph.values())), "top level": len([m for m in graph if m in TOP_LEVEL]),
            "longest chain": " -> ".join(longest_chain(imports(typing=False))),
            "longest function": f"{longest[2]} ({longest[0]} lines)",
            "deepest nesting": f"{deepest[2]} ({deepest[1]})", "lines over 120 characters": long_lines}


if __name__ == "__main__":
    for key, value in shape().items():
        print(f"{key}: {value}")

"""The package's shape, checked from its source: imports go from higher layers to lower ones only (so
there is no cycle), no module is over about 400 lines, and no module keeps mutable state at module level."""
import ast
import inspect
from pathlib import Path

import centerloss_cli

PACKAGE = Path(centerloss_cli.__file__).parent
# Lowest first: a module may import only modules of lower layers (imports inside functions count too).
LAYERS = [
    {"errors", "stop", "metrics"},
    {"schema", "storage", "fetch"},
    {"config"},
    {"schedule", "model", "solver", "devices", "data", "runfiles"},
    {"center_loss", "runs", "figures", "listing"},
    {"charts", "processes"},
    {"plotting", "engine"},
    {"capture"},
    {"runtime", "stacked", "tensorboard"},
    {"loop"},
    {"training"},
    {"local"},
    {"slurm"},
    {"sweep"},
    {"child", "cli"},
    {"__main__", "__init__"},
]


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, wherever in it the import stands."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for p in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names} & modules
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("centerloss_cli."):
                found.add(node.module.split(".")[1])
        graph[p.stem] = found
    return graph


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


def test_the_imports_have_no_cycle_and_go_down_the_layers_only():
    graph = imports()
    assert find_cycle(graph) is None, find_cycle(graph)
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    assert set(layer) == set(graph), f"modules without a layer: {sorted(set(graph) - set(layer))}"
    upward = [(m, n) for m, deps in graph.items() for n in deps if layer[n] >= layer[m]]
    assert not upward, f"imports that do not go down a layer: {upward}"


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_about_400_lines_or_keeps_mutable_module_state():
    for p in PACKAGE.glob("*.py"):
        text = p.read_text()
        assert len(text.splitlines()) <= 420, p.name
        tree = ast.parse(text)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{p.name} rebinds a module global"
        for node in tree.body:  # no module-level list/dict/set that code could fill, nor a cache of data
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.List, ast.Dict, ast.Set)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                assert all(n.isupper() or n == "__all__" for n in names), f"{p.name}: mutable module state {names}"
            if isinstance(node, ast.FunctionDef):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                assert not any("lru_cache" in d for d in decorators), f"{p.name}: {node.name} caches at module level"


def test_train_is_a_plain_function():
    from centerloss_cli import train

    assert inspect.isfunction(train) and train.__module__ == "centerloss_cli.training"

"""The package's layering, read from its source (every import, function-level ones too).

The data flow runs one way: corpus -> lm -> sae -> evaluate -> interpret (-> exercises).
A subpackage imports only those before it, and the frame's foundation (config, artifacts,
training); none imports the frame's rundir, pipeline, stages, cli or report, so a notebook can
call any stage module on tensors without a run directory. config and artifacts import
nothing of ours; rundir only artifacts; pipeline alone knows the stage order.
"""

import ast
from pathlib import Path

import pytest

import tinycourse

PACKAGE = Path(tinycourse.__file__).parent
FLOW = ("corpus", "lm", "sae", "evaluate", "interpret", "exercises")
FOUNDATION = {"config": set(), "artifacts": set(), "training": {"config", "artifacts"}}
FRAME_ONLY = {"rundir", "pipeline", "stages", "cli", "report"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every `tinycourse...` module `path` imports, as dotted names below tinycourse."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from . import storyworld` imports a module, `from .. import __version__` a
            # name of the package; `from .x import name` imports x
            names = [stem] if node.module else [
                f"{stem}.{a.name}" if _is_module(f"{stem}.{a.name}") else stem for a in node.names]
        else:
            continue
        found.update(n for n in names if n == "tinycourse" or n.startswith("tinycourse."))
    return {n.removeprefix("tinycourse").removeprefix(".") for n in found} - {""}


MODULES = {_module_name(p).removeprefix("tinycourse."): _imports(p)
           for p in sorted(PACKAGE.rglob("*.py"))}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_subpackage_of_the_flow_exists_with_a_docstring():
    for sub in FLOW + ("report",):
        init = PACKAGE / sub / "__init__.py"
        assert init.is_file(), f"tinycourse/{sub}/ is missing"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


@pytest.mark.parametrize("module", sorted(FOUNDATION))
def test_the_foundation_imports_only_the_foundation(module):
    assert {_top(m) for m in MODULES[module]} <= FOUNDATION[module]


def test_rundir_imports_only_artifacts():
    assert {_top(m) for m in MODULES["rundir"]} <= {"artifacts"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _top(m) in FLOW))
def test_a_subpackage_imports_only_what_comes_before_it(module):
    own = FLOW.index(_top(module))
    allowed = set(FLOW[: own + 1]) | set(FOUNDATION)
    for imported in MODULES[module]:
        top = _top(imported)
        assert top not in FRAME_ONLY, f"{module} imports the frame's {imported}"
        assert top in allowed, (f"{module} imports {imported}, which comes later in the data "
                                f"flow ({' < '.join(FLOW)})")


def test_the_checker_sees_real_imports():
    """The rules above are only worth something if the parser finds the imports."""
    assert "corpus.shards" in MODULES["lm.train"]
    assert "corpus.storyworld" in MODULES["corpus.sources"]  # `from . import storyworld`
    assert "sae.model" in MODULES["stages.dictionaries"]  # a function-level import
    assert "stages.text" in MODULES["pipeline"]  # `from .stages import text`


def test_pipeline_alone_knows_the_stage_order():
    from tinycourse.pipeline import STAGES

    order = list(STAGES)
    for path in PACKAGE.rglob("*.py"):
        if path.name == "pipeline.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text())
        # a stage's own `stage(..., needs=(...))` names what it reads, not the course's order
        declared = {id(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "stage" for k in node.keywords}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List)) and id(node) not in declared:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                assert values[:3] != order[:3], f"{path} spells out the stage order {values}"

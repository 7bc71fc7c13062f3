"""The facegan modules each DVC stage's outputs can depend on, read statically from the source.

    python tests/depgraph.py          # per stage: the module files its dvc.yaml deps do not cover yet
    python tests/depgraph.py --write  # rewrite the code deps of every stage in dvc.yaml from this analysis

A stage's modules are what its entry script imports, transitively, at the granularity of names: importing
`f` from a module brings the module's top-level code and everything `f` reaches (its imports, module-level
functions and tables it names, recursively); importing a whole module brings all of it. Imports inside
functions count (lazy imports are real dependencies); `if TYPE_CHECKING:` blocks and `__main__` blocks of
imported modules do not. Two registries are read by what they dispatch to, not by everything they list:
- `facegan.chain`: of the stage glue functions in its STAGES tables, only those of stages actually run
  (`stage_main("x")` or `run_stage("x", ...)` with a constant name anywhere on the path) are followed;
- `facegan.models`: config reads the MODELS table; the nets behind its builders come with `build_models`.
EXEMPT modules cannot change any output (tracking, log set-up, error types) and are neither followed nor required.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
EXEMPT = {
    "facegan.track": "MLflow tracking",
    "facegan.logs": "log set-up",
    "facegan.errors": "error types and messages",
}
CHAIN = "facegan.chain"
# (module, top-level name) -> the top-level names it really reaches, replacing what its source names
REFS_OVERRIDE: dict[tuple[str, str], set[str] | str] = {
    ("facegan.models", "MODELS"): set(),  # a table of specs: reading it builds nothing
    ("facegan.models", "build_models"): "*builders",  # builds through the table: every builder function
    (CHAIN, "STAGES"): set(),
    (CHAIN, "PAIR_STAGES"): set(),  # glue functions come by stage name
}
ALL = None  # "the whole module"


def module_file(name: str, src: Path = SRC) -> Path:
    base = src / Path(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(src: Path = SRC) -> frozenset[str]:
    return frozenset(module_name(f, src) for f in (src / "facegan").rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _is_main_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


Import = tuple[str, frozenset[str] | None]  # (module, names imported from it, or ALL)


@dataclass
class Part:
    """One piece of a module: its imports, the top-level names it refers to, the stages it runs."""

    imports: set[Import] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)
    stages: set[str] = field(default_factory=set)


def _collect(nodes: list[ast.AST], me: str, package: str, modules: frozenset[str]) -> Part:
    part = Part()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            part.imports.update((a.name, ALL) for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                keep = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(keep + ([base] if base else []))
            if base in modules:
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    part.imports.add((sub, ALL) if sub in modules else (base, frozenset({a.name})))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            part.refs.add(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) in ("stage_main", "run_stage")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            part.stages.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for n in nodes:
        visit(n)
    part.imports = {(m, names) for m, names in part.imports if m != me}
    return part


@dataclass
class Module:
    always: Part  # top-level code run on import
    defs: dict[str, Part]  # top-level functions, classes and assigned names


@cache
def parse(name: str, entry: bool = False, src: Path = SRC) -> Module:
    """A module split into what runs on import and its top-level definitions (`entry`: run as a script)."""
    f = module_file(name, src) if not entry else Path(name)
    tree = ast.parse(f.read_text(encoding="utf-8"))
    modules = all_modules(src)
    me = "__main__" if entry else name
    package = me if f.name == "__init__.py" else me.rpartition(".")[0]
    always_nodes: list[ast.AST] = []
    defs: dict[str, list[ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[node.name] = [node]
            always_nodes += node.decorator_list
        elif isinstance(node, ast.Assign | ast.AnnAssign) and all(
            isinstance(t, ast.Name) for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        ):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                defs[t.id] = [node.value] if node.value is not None else []
        elif _is_main_block(node) and not entry:
            continue
        else:
            always_nodes.append(node)
    parts = {k: _collect(v, me, package, modules) for k, v in defs.items()}
    for (mod, key), refs in REFS_OVERRIDE.items():
        if mod == name and key in parts:
            parts[key].refs = {d for d in parts if d.startswith("_")} if refs == "*builders" else set(refs)
    return Module(_collect(always_nodes, me, package, modules), parts)


def chain_stage_functions(src: Path = SRC) -> dict[str, str]:
    """Stage name -> its glue function in chain.py (from the STAGES / PAIR_STAGES tables)."""
    tree = ast.parse(module_file(CHAIN, src).read_text(encoding="utf-8"))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Tuple) and isinstance(v.elts[0], ast.Name):
                    out[k.value] = v.elts[0].id
    return out


def stage_modules(script: Path, src: Path = SRC) -> set[str]:
    """The facegan modules a stage script can run, transitively (EXEMPT ones left out)."""
    glue = chain_stage_functions(src)
    entry = parse(str(script), entry=True, src=src)
    reached: dict[str, set[str]] = {}  # module -> top-level names included so far ("*" = all)
    todo: list[tuple[str, set[str]]] = []
    stages: set[str] = set()

    def take(part: Part) -> None:
        for mod, names in part.imports:
            todo.append((mod, {"*"} if names is ALL else set(names)))
        stages.update(part.stages)

    take(entry.always)
    for p in entry.defs.values():
        take(p)
    done_stages: set[str] = set()
    while todo or stages - done_stages:
        for stage in sorted(stages - done_stages):
            done_stages.add(stage)
            todo.append((CHAIN, {glue[stage]}))
        if not todo:
            continue
        mod, names = todo.pop()
        if mod in EXEMPT:
            continue
        m = parse(mod, src=src)
        have = reached.get(mod)
        if have is None:
            reached[mod] = have = set()
            take(m.always)
            names = names | m.always.refs
        if "*" in names:
            names = set(m.defs) - (set(glue.values()) if mod == CHAIN else set())
        new = [n for n in names if n in m.defs and n not in have]
        while new:
            n = new.pop()
            if n in have:
                continue
            have.add(n)
            take(m.defs[n])
            new += [r for r in m.defs[n].refs if r in m.defs and r not in have]
    return set(reached)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Every module -> the facegan modules it imports anywhere (for the import-cycle test)."""
    out = {}
    for name in sorted(all_modules(src)):
        tree = ast.parse(module_file(name, src).read_text(encoding="utf-8"))
        is_pkg = module_file(name, src).name == "__init__.py"
        part = _collect([tree], name, name if is_pkg else name.rpartition(".")[0], all_modules(src))
        out[name] = {m for m, _ in part.imports}
    return out


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    """dvc.yaml's stages (a `foreach` stage once: its code deps are the same for every key)."""
    raw = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in raw.items():
        body = st.get("do", st)
        out[name] = {"cmd": body["cmd"], "deps": [d for d in body.get("deps", []) if not d.startswith("data/")]}
    return out


def uncovered(stage: dict, root: Path = ROOT, src: Path = SRC) -> list[str]:
    """Module files the stage can run that its deps (files or folders) do not cover."""
    script = root / stage["cmd"].split()[1]
    deps = [Path(d) for d in stage["deps"]]
    missing = []
    for m in sorted(stage_modules(script, src)):
        rel = module_file(m, src).relative_to(root)
        if not any(rel == d or d in rel.parents for d in deps):
            missing.append(str(rel))
    return missing


def required_deps(script: Path, root: Path = ROOT, src: Path = SRC) -> list[str]:
    """The code deps a stage needs: its script and the module files it runs (a folder when it needs all of it)."""
    files = {module_file(m, src).relative_to(root) for m in stage_modules(script, src)}
    out = {script.relative_to(root)}
    for folder in sorted({f.parent for f in files}):
        every = {p.relative_to(root) for p in (root / folder).glob("*.py")}
        out |= (
            {folder} if every <= files and folder != Path("src/facegan") else {f for f in files if f.parent == folder}
        )
    return sorted(map(str, out), key=lambda d: (not d.startswith("stages/"), d))  # the script first


def write_deps(root: Path = ROOT) -> list[str]:
    """Rewrite the code deps of every stage in dvc.yaml (data deps and comments kept); returns changed stages."""
    from ruamel.yaml import YAML

    yml = YAML()
    yml.preserve_quotes = True
    yml.width = 200
    yml.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    doc = yml.load(path.read_text())
    changed = []
    for name, st in doc["stages"].items():
        body = st.get("do", st)
        code = required_deps(root / body["cmd"].split()[1], root)
        data = [d for d in body.get("deps", []) if str(d).startswith("data/")]
        if [str(d) for d in body.get("deps", []) if not str(d).startswith("data/")] != code:
            body["deps"].clear()
            body["deps"].extend(code + data)
            changed.append(name)
    with path.open("w") as f:
        yml.dump(doc, f)
    return changed


if __name__ == "__main__":
    if "--write" in sys.argv:
        print("rewrote the code deps of: " + (", ".join(write_deps()) or "nothing (all up to date)"))
    bad = 0
    for name, st in dvc_stages().items():
        miss = uncovered(st)
        bad += bool(miss)
        print(f"{name}: " + ("ok" if not miss else "missing " + ", ".join(miss)))
    sys.exit(1 if bad else 0)

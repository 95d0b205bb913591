"""Hold dvc.yaml against the code, so `dvc repro` reruns exactly what a change touches.

For every stage (as DVC itself reads dvc.yaml; the DVC projects inside this one, such as
monitoring/, too):
- deps: its script and every local module the script imports, directly or through other local
  modules (imports inside functions count; those under `if TYPE_CHECKING:` do not; a package's
  `__init__.py` counts once it holds code). A local .py listed but never imported is reported
  too: it reruns the stage for nothing.
- params: every section it reads with `params.load("<section>")`, in its script or in a module
  it imports, is declared (the section, or keys under it); nothing is declared that it never
  reads. A section that is not a string literal cannot be checked and is reported.
- outputs (`--outputs`, after a run): every declared out, metric and plot exists.

    python -m lifecycle.dag_check [--root DIR] [--outputs]     # exit 1 and one line per problem
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PARAMS_LOADER = "lifecycle.params.load"
RUNNER = "lifecycle.warm"  # `python -m lifecycle.warm stages.x`: runs stages.x (its own module)
DEFAULT_PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Stage:
    """What dvc.yaml declares for one stage, paths relative to the project root."""

    name: str
    commands: tuple[str, ...]
    deps: frozenset[str]
    params: dict[str, frozenset[str]]  # params file -> declared sections or keys
    outs: tuple[str, ...]


@dataclass(frozen=True)
class ParamsRead:
    file: str
    section: str | None  # None: not a string literal
    where: str           # path:line


@dataclass
class ModuleScan:
    imports: set[str] = field(default_factory=set)  # local files this module imports
    reads: list[ParamsRead] = field(default_factory=list)


def load_stages(project: Path, root: Path | None = None) -> list[Stage]:
    """The pipeline stages of the DVC project at `project`, read by DVC (vars, foreach, matrix),
    paths relative to `root` (default: the project itself)."""
    from dvc.repo import Repo

    root = root or project

    def rel(stage, path: str) -> str:
        return Path(os.path.relpath(Path(stage.wdir) / path, root)).as_posix()

    stages = []
    with Repo(str(project)) as repo:
        for st in repo.index.stages:
            if not st.cmd:
                continue  # a .dvc file (dvc add), not a stage
            params: dict[str, set[str]] = {}
            deps = set()
            for dep in st.deps:
                keys = getattr(dep, "params", None)
                if keys is not None:
                    params.setdefault(rel(st, dep.def_path), set()).update(keys)
                else:
                    deps.add(rel(st, dep.def_path))
            cmds = (st.cmd,) if isinstance(st.cmd, str) else tuple(st.cmd)
            stages.append(Stage(st.name, cmds, frozenset(deps),
                                {f: frozenset(k) for f, k in params.items()},
                                tuple(rel(st, o.def_path) for o in st.outs)))
    return stages


def nested_projects(root: Path) -> list[Path]:
    """The DVC projects inside `root`'s work tree (`dvc init --subdir`: monitoring/), which
    DVC in `root` does not see."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             "--", "*.dvc/config"], cwd=root, capture_output=True, text=True)
    found = {root / Path(path).parent.parent for path in listed.stdout.split("\0") if path}
    return sorted(found - {root})


# --- what the code imports and reads ----------------------------------------------------------
def module_file(module: str, root: Path) -> str | None:
    """`a.b.c` -> 'a/b/c.py' or 'a/b/c/__init__.py' if that file is in the project."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def has_code(path: Path) -> bool:
    """Whether a package's __init__.py does more than hold a docstring."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
               for node in body)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module or ""
    package = current.split(".") if is_package else current.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def scan_module(path: str, root: Path) -> ModuleScan:
    """The local modules one file imports and the params sections it loads."""
    tree = ast.parse((root / path).read_text(), filename=path)
    current, is_package = module_name(path), path.endswith("__init__.py")
    scan = ModuleScan()
    names: dict[str, str] = {}  # local name -> what it is bound to (dotted)

    def add(module: str) -> None:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            found = module_file(".".join(parts[:i]), root)
            if found and (not found.endswith("__init__.py") or has_code(root / found)):
                scan.imports.add(found)

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if module_file(alias.name, root):
                    add(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, current, is_package)
            if module_file(base, root):
                add(base)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if module_file(full, root):
                    add(full)
                names[alias.asname or alias.name] = full
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Call) and _dotted(node.func, names) == PARAMS_LOADER:
            scan.reads.append(_params_read(node, f"{path}:{node.lineno}"))
    scan.imports.discard(path)
    return scan


def _dotted(func: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute):
        owner = _dotted(func.value, names)
        return f"{owner}.{func.attr}" if owner else None
    return None


def _params_read(call: ast.Call, where: str) -> ParamsRead:
    args = {kw.arg: kw.value for kw in call.keywords}
    section = call.args[0] if call.args else args.get("section")
    file = call.args[1] if len(call.args) > 1 else args.get("path")

    def literal(node: ast.expr | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) \
            else None

    file_name = DEFAULT_PARAMS_FILE if file is None else (literal(file) or "<not a literal>")
    return ParamsRead(file_name, literal(section), where)


def scripts_of(commands: Iterable[str], root: Path) -> list[str]:
    """The project's Python files a stage command runs (`python -m pkg.mod`, `python x.py`, and
    the module the warm runner runs: `python -m lifecycle.warm pkg.mod`)."""
    found = []
    for command in commands:
        words = shlex.split(command)
        for i, word in enumerate(words):
            runs_module = word == "-m" or (i > 0 and words[i - 1] == "-m" and word == RUNNER)
            if runs_module and i + 1 < len(words):
                module = module_file(words[i + 1], root)
                if module:
                    found += [*_packages_with_code(words[i + 1], root), module]
            elif word.endswith(".py") and (root / word).is_file():
                found.append(Path(word).as_posix())
    return found


def _packages_with_code(module: str, root: Path) -> list[str]:
    parts = module.split(".")
    files = (module_file(".".join(parts[:i]), root) for i in range(1, len(parts)))
    return [f for f in files if f and has_code(root / f)]


def code_of(stage: Stage, root: Path) -> tuple[dict[str, str], list[ParamsRead]]:
    """Every local file a stage runs -> how it gets imported; and every params read in them."""
    chain: dict[str, str] = {}
    reads: list[ParamsRead] = []
    queue = []
    for script in scripts_of(stage.commands, root):
        chain.setdefault(script, "the stage's command")
        queue.append(script)
    while queue:
        path = queue.pop(0)
        scan = scan_module(path, root)
        reads += scan.reads
        for imported in sorted(scan.imports):
            if imported not in chain:
                chain[imported] = f"imported by {path}"
                queue.append(imported)
    return chain, reads


# --- the checks -------------------------------------------------------------------------------
def _covered(path: str, declared: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def check_stage(stage: Stage, root: Path) -> list[str]:
    """Problems of one stage's deps and params against its code."""
    problems = []
    say = f"dvc.yaml: stage '{stage.name}':"
    chain, reads = code_of(stage, root)
    for path, why in chain.items():
        if not _covered(path, stage.deps):
            problems.append(f"{say} deps lack {path} ({why})")
    for dep in sorted(stage.deps):
        if dep.endswith(".py") and dep not in chain:
            problems.append(f"{say} deps list {dep}, which the stage never runs or imports")

    used: dict[str, set[str]] = {}
    for read in reads:
        if read.section is None or read.file == "<not a literal>":
            problems.append(f"{say} {read.where} loads params with a section or file that is not "
                            "a string literal, so dvc.yaml cannot be checked against it")
            continue
        used.setdefault(read.file, set()).add(read.section)
        declared = stage.params.get(read.file)
        if declared == frozenset():
            continue  # `- params.yaml:` with no keys declares the whole file
        if not any(k == read.section or k.startswith(read.section + ".") for k in declared or ()):
            problems.append(f"{say} params lack '{read.section}' from {read.file} "
                            f"(read at {read.where})")
    for file, keys in stage.params.items():
        for key in sorted(keys):
            if key.split(".")[0] not in used.get(file, set()):
                problems.append(f"{say} params list '{key}' from {file}, which the stage never "
                                "reads")
    return problems


def check_outputs(stages: Iterable[Stage], root: Path) -> list[str]:
    """Declared outs, metrics and plots that a run did not write."""
    return [f"dvc.yaml: stage '{st.name}': declared output {out} does not exist after the run"
            for st in stages for out in st.outs if not (root / out).exists()]


def undeclared_outputs(stages: Iterable[Stage], root: Path) -> list[str]:
    """Files a fresh run left in a git work tree that no stage declares (nor git tracks)."""
    declared = [out for st in stages for out in st.outs] + ["dvc.lock"]
    listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    return [f"{path}: written by the DAG but declared by no stage"
            for path in filter(None, listed.split("\0"))
            if not _covered(path, declared) and Path(path).name != ".gitignore"]  # DVC's own


def check(root: Path, outputs: bool = False) -> list[str]:
    """Every problem of the project at `root` and the projects inside it (deps and params);
    outputs too if asked: those of `root`'s own stages, which its `dvc repro` writes."""
    stages = load_stages(root)
    nested = [st for project in nested_projects(root) for st in load_stages(project, root)]
    problems = [p for st in stages + nested for p in check_stage(st, root)]
    return problems + (check_outputs(stages, root) if outputs else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the DVC project")
    parser.add_argument("--outputs", action="store_true",
                        help="also check that every declared output exists (after a run)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    problems = check(root, outputs=args.outputs)
    for problem in problems:
        print(problem)
    print(f"dag_check: {len(problems)} problem(s)" if problems
          else "dag_check: dvc.yaml matches the code", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

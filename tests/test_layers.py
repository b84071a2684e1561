"""The layers of docs/architecture.md hold in the code: imports point down (late ones inside
functions too), and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Imports that break the order on purpose, each with its reason: (importer, imported).
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {module_name(root, p): p for p in sorted((root / "identity").rglob("*.py"))}
    return {m: p for m, p in found.items() if not m.startswith("identity.migrations")}


def imports(root: Path, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for each import of this project in the file, wherever it stands."""
    me = module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:  # `from identity.auth import views` imports a module
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if full in known else base))
    return [(line, m) for line, m in found if m.split(".")[0] in ("identity", "config")]


def layers(root: Path = ROOT) -> list[list[str]]:
    """The steps of the list in docs/architecture.md, top first, as module prefixes."""
    text = " ".join((root / "docs" / "architecture.md").read_text().split())
    order = re.search(r"Imports point down this list, never up[^:]*: (.*?\))\.", text)
    assert order, "docs/architecture.md no longer lists the layers"
    return [
        [_prefix(name) for name in re.findall(r"`([^`]+)`", step)]
        for step in order.group(1).split("→")
    ]


def _prefix(name: str) -> str:
    if name == "identity/__init__.py":
        return "identity"
    if name == "config":
        return "config"
    return "identity." + name.strip("/").removeprefix("identity/").replace("/", ".")


def _place(module: str, steps: list[list[str]]) -> tuple[int, str] | None:
    """(step, group) of a module: the longest prefix the list names."""
    best = None
    for rank, names in enumerate(steps):
        for prefix in names:
            if module == prefix or (prefix != "identity" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > len(best[1]):
                    best = (rank, prefix)
    if best and best[1] == "identity.settings":  # one leaf with config
        return best[0], "config"
    return best


def offenders(root: Path = ROOT) -> list[str]:
    """Each import that points up the list, or across to a neighbour in one step."""
    steps, found = layers(root), modules(root)
    leaves = len(steps) - 1
    wrong = []
    for module, path in found.items():
        rank, group = _place(module, steps)
        for line, target in imports(root, path, set(found)):
            placed = _place(target, steps)
            # `identity` itself runs before any of its modules: importing it adds nothing.
            if placed is None or target == "identity" or (module, target) in ALLOWED:
                continue
            to_rank, to_group = placed
            beside = to_rank == rank and to_group != group and rank != leaves
            if to_rank < rank or beside:
                wrong.append(f"{path.relative_to(root)}:{line} imports {target}")
    return wrong


def test_every_module_has_a_place_in_the_layers():
    steps = layers()
    unplaced = [m for m in modules() if _place(m, steps) is None]
    assert not unplaced, f"add these to the layers in docs/architecture.md: {unplaced}"


def test_imports_point_down_the_layers():
    wrong = offenders()
    assert not wrong, "imports against docs/architecture.md's order:\n" + "\n".join(wrong)


def test_the_check_finds_upward_and_sideways_imports_even_inside_functions(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text(
        (ROOT / "docs" / "architecture.md").read_text()
    )
    for folder in ("oidc", "auth"):
        (tmp_path / "identity" / folder).mkdir(parents=True)
        (tmp_path / "identity" / folder / "__init__.py").write_text("")
    (tmp_path / "identity" / "auth" / "signin.py").write_text("from identity import audit, names\n")
    (tmp_path / "identity" / "audit.py").write_text("from identity.ops import LATENCY\n")
    (tmp_path / "identity" / "oidc" / "late.py").write_text(
        "def f():\n    from identity.auth.signin import sign_out\n"
    )
    assert sorted(offenders(tmp_path)) == [
        "identity/audit.py:1 imports identity.ops",
        "identity/oidc/late.py:2 imports identity.auth.signin",
    ]


# Run in one child process: the libraries are imported once, then each module of the
# package is imported in a fork of it, so that each starts with none of ours loaded.
_FRESH = r"""
import compileall, json, os, sys, warnings
names, libraries = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# Compiled once here, not once per fork (PYTHONDONTWRITEBYTECODE may be set).
sys.dont_write_bytecode, sys.pycache_prefix = False, sys.argv[3]
compileall.compile_dir("identity", quiet=1)
if os.path.exists("config.py"):
    compileall.compile_file("config.py", quiet=1)
for library in libraries:
    try:
        __import__(library)
    except Exception:
        pass
def start(name):
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, name, read
    os.close(read)
    warnings.simplefilter("error")
    try:
        __import__(name)
        message = ""
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
    os.write(write, message.encode())
    os._exit(0)
def finish(pid, name, read):
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    if message:
        failed[name] = message
failed, running = {}, []
for name in names:  # as many at a time as there are processors
    if len(running) >= (os.cpu_count() or 1):
        finish(*running.pop(0))
    running.append(start(name))
for child in running:
    finish(*child)
print(json.dumps(failed))
"""


def _libraries(found: dict[str, Path]) -> list[str]:
    """The third-party modules the package imports (preloaded: the check is about ours)."""
    names = set()
    for path in found.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in ("identity", "config"))


def fresh_import_failures(root: Path, pycache: Path) -> dict[str, str]:
    """{module: the error} for each module of root/identity that fails to import alone."""
    found = modules(root)
    names, libraries = json.dumps(sorted(found)), json.dumps(_libraries(found))
    run = subprocess.run(
        [sys.executable, "-c", _FRESH, names, libraries, str(pycache)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_every_module_imports_on_its_own_in_a_fresh_interpreter(tmp_path):
    failed = fresh_import_failures(ROOT, tmp_path)
    assert not failed, "\n".join(f"{name}: {message}" for name, message in failed.items())


def test_the_fresh_import_check_finds_a_cycle(tmp_path):
    package = tmp_path / "tree" / "identity"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from identity.second import B\nA = 1\n")
    (package / "second.py").write_text("from identity.first import A\nB = 2\n")
    (package / "alone.py").write_text("import json\n")
    failed = fresh_import_failures(tmp_path / "tree", tmp_path / "pycache")
    assert sorted(failed) == ["identity.first", "identity.second"]
    assert "circular import" in failed["identity.first"]

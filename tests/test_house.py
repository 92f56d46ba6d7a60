"""The house rules, checked: each room says its job, no room over about 300 lines, no import circle
(a lazy import inside a function counts), and README's list of rooms names every file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "projector"
ROOMS = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py")


def module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports, anywhere in it."""
    name = module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{alias.name}" for alias in node.names} | ({target} if node.module else set())
    known = {module(room) for room in ROOMS}
    return {target for target in found if target in known and target != name}


def test_each_room_says_its_job_and_stays_small() -> None:
    for room in ROOMS:
        tree = ast.parse(room.read_text())
        assert ast.get_docstring(tree), f"{room} has no docstring saying its job"
        lines = room.read_text().count("\n")
        assert lines <= 310, f"{room} is {lines} lines"


def test_no_import_circle() -> None:
    graph = {module(room): imports(room) for room in ROOMS}

    def reaches(start: str, node: str, seen: set[str]) -> bool:
        for successor in graph[node]:
            if successor == start:
                return True
            if successor not in seen:
                seen.add(successor)
                if reaches(start, successor, seen):
                    return True
        return False

    circles = [name for name in graph if not name.endswith(".__init__") and reaches(name, name, {name})]
    # A package's __init__ imports its rooms, which import each other through the package: not a circle.
    circles = [
        name for name in circles if not any(name.startswith(p + ".") and p in graph[name] for p in graph)
    ]
    assert not circles, circles


def test_readme_names_every_room() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text.split("Layout, one job a room", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`([a-z_]+\.py)`", layout))
    rooms = {room.name for room in ROOMS if room.name != "__init__.py"}
    assert rooms <= named, f"README's layout does not name: {sorted(rooms - named)}"

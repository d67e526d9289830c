"""A lint for the recipes here, which cannot be built without a Yocto build host, and the
tool that writes the release sdists' checksums into them.

    python support/yocto/recipes.py lint                    every recipe, every check
    python support/yocto/recipes.py set-checksums DIST_DIR  SRC_URI[sha256sum] from the sdists

The parser reads the BitBake subset the recipes use: ``VAR = "..."`` (also ``?=``, ``??=``,
``VAR[flag] = ...``, overrides such as ``RDEPENDS:${PN}``), backslash continuations,
``inherit``, and shell functions (``name() { ... }``, kept as text).
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# the recipe of each distribution, and where that distribution's sources are
SOURCES = {"mender-orchestrator-py": REPO, "mender-orchestrator-canbus": REPO / "drivers/canbus",
           "mender-orchestrator-i2c": REPO / "drivers/i2c",
           "mender-orchestrator-mcuboot": REPO / "drivers/mcuboot",
           "mender-orchestrator-esp32": REPO / "drivers/esp32"}
PLACEHOLDER = "UNSET-run-support/yocto/recipes.py-set-checksums"
REQUIRED = ("SUMMARY", "HOMEPAGE", "LICENSE", "LIC_FILES_CHKSUM", "PYPI_PACKAGE",
            "SRC_URI[sha256sum]", "RDEPENDS:${PN}")
# a Python requirement -> the OpenEmbedded package that provides it, where the name differs
# from python3-<name>
PROVIDERS = {"pyyaml": "python3-pyyaml", "python-can": "python3-can",
             "mender-orchestrator-py": "mender-orchestrator-py"}

ASSIGNMENT = re.compile(r'^([A-Za-z0-9_:${}.\-\[\]]+)\s*(\?\?=|\?=|:=|\+=|=\+|=)\s*"(.*)"$',
                        re.DOTALL)
FUNCTION = re.compile(r"^([A-Za-z0-9_:${}\-]+)\s*\(\)\s*\{$")


class RecipeError(Exception):
    """A line the parser does not understand."""


@dataclass
class Recipe:
    path: Path
    variables: dict[str, str] = field(default_factory=dict)
    inherits: list[str] = field(default_factory=list)
    functions: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name.split("_")[0]

    @property
    def version(self) -> str:
        return self.path.stem.split("_", 1)[1]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending:
        raise RecipeError(f"line {start}: continuation at the end of the file")
    return lines


def parse(path: Path) -> Recipe:
    recipe = Recipe(path)
    function: tuple[str, list[str]] | None = None
    for number, line in _logical_lines(path.read_text()):
        if function is not None:
            if line.strip() == "}":
                recipe.functions[function[0]] = "\n".join(function[1])
                function = None
            else:
                function[1].append(line)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("inherit "):
            recipe.inherits += stripped.split()[1:]
        elif match := FUNCTION.match(stripped):
            function = (match.group(1), [])
        elif match := ASSIGNMENT.match(stripped):
            name, operator, value = match.groups()
            if name in recipe.variables and operator in ("?=", "??="):
                continue
            recipe.variables[name] = " ".join(value.split())
        else:
            raise RecipeError(f"{path.name}:{number}: not understood: {stripped}")
    if function is not None:
        raise RecipeError(f"{path.name}: function {function[0]} is not closed")
    return recipe


def sdist_name(distribution: str) -> str:
    return distribution.replace("-", "_")


def pyproject(distribution: str) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(
        (SOURCES[distribution] / "pyproject.toml").read_text())["project"]
    dynamic = project.get("dynamic")
    if isinstance(dynamic, list) and "version" in dynamic:
        # the core's version is written once, in its package (setuptools reads the attribute)
        init = (SOURCES[distribution] / "orchestrator_core" / "__init__.py").read_text()
        found = re.search(r'^__version__ = "(.+)"$', init, re.M)
        project["version"] = found.group(1) if found else None
    return project


def _provider(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
    return PROVIDERS.get(name, f"python3-{name}")


def lint(recipe: Recipe, sdist: Path | None = None) -> list[str]:
    """Every problem in ``recipe``, as ``file: what``; ``sdist`` the release sdist whose
    checksum the recipe must carry (else the placeholder is accepted)."""
    problems = []

    def problem(text: str) -> None:
        problems.append(f"{recipe.path.name}: {text}")

    variables = recipe.variables
    for name in REQUIRED:
        if not variables.get(name):
            problem(f"{name} is not set")
    if recipe.name not in SOURCES:
        problem(f"no distribution named {recipe.name}")
        return problems
    project = pyproject(recipe.name)
    if recipe.version != project["version"]:
        problem(f"version {recipe.version} in the file name, {project['version']} in "
                "pyproject.toml")
    if variables.get("LICENSE") != project["license"]:
        problem(f"LICENSE {variables.get('LICENSE')!r}, pyproject.toml says "
                f"{project['license']!r}")
    md5 = hashlib.md5((SOURCES[recipe.name] / "LICENSE").read_bytes()).hexdigest()
    if variables.get("LIC_FILES_CHKSUM") != f"file://LICENSE;md5={md5}":
        problem(f"LIC_FILES_CHKSUM {variables.get('LIC_FILES_CHKSUM')!r}, expected "
                f"'file://LICENSE;md5={md5}'")
    if variables.get("PYPI_PACKAGE") != sdist_name(recipe.name):
        problem(f"PYPI_PACKAGE should be {sdist_name(recipe.name)} (the sdist's name)")
    for needed in ("pypi", "python_setuptools_build_meta"):
        if needed not in recipe.inherits:
            problem(f"does not inherit {needed}")
    checksum = variables.get("SRC_URI[sha256sum]", "")
    if sdist is not None:
        expected = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if checksum != expected:
            problem(f"SRC_URI[sha256sum] {checksum}, the sdist {sdist.name} has {expected}")
    elif checksum != PLACEHOLDER and not re.fullmatch(r"[0-9a-f]{64}", checksum):
        problem(f"SRC_URI[sha256sum] is neither a sha256 nor the placeholder {PLACEHOLDER}")
    rdepends = set(variables.get("RDEPENDS:${PN}", "").split())
    dependencies = project.get("dependencies", [])
    assert isinstance(dependencies, list)
    for requirement in dependencies:
        if _provider(requirement) not in rdepends:
            problem(f"RDEPENDS:${{PN}} lacks {_provider(requirement)} (for {requirement})")
    return problems


def recipes(directory: Path = HERE) -> list[Path]:
    return sorted(directory.glob("*.bb"))


def set_checksums(dist: Path, directory: Path = HERE) -> list[Path]:
    """Write each recipe's sdist sha256 (from ``dist``) in place of its current one."""
    changed = []
    for path in recipes(directory):
        recipe = parse(path)
        sdist = dist / f"{sdist_name(recipe.name)}-{recipe.version}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        text, count = re.subn(r'^SRC_URI\[sha256sum\] = ".*"$',
                              f'SRC_URI[sha256sum] = "{digest}"', path.read_text(),
                              flags=re.MULTILINE)
        if count != 1:
            raise RecipeError(f"{path.name}: expected one SRC_URI[sha256sum] line")
        path.write_text(text)
        changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if argv == ["lint"]:
        problems = [p for path in recipes() for p in lint(parse(path))]
        print("\n".join(problems) or f"{len(recipes())} recipes: OK")
        return 1 if problems else 0
    if len(argv) == 2 and argv[0] == "set-checksums":
        for path in set_checksums(Path(argv[1])):
            print(f"updated {path}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

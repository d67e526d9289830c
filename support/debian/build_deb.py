"""Builds ``mender-orchestrator_VERSION-1_ARCH.deb`` from the repository with dpkg-deb.

    python support/debian/build_deb.py OUTDIR        (what `make deb` runs)

The orchestrator and the bundled drivers are wheels built from this checkout, installed
into /usr/lib/mender-orchestrator (a private site directory put first on sys.path by the
/usr/bin wrappers, so Debian's python3 runs it without a virtualenv). Each runtime dependency
comes from a Debian 12 package when Debian's version meets every requirement on it (checked
below against the requirement strings of the installed distributions), else its wheel, at
the version this build environment was tested with, is vendored into the same directory.
Runs with the Python of a venv where the three distributions are installed (`make venv`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "mender-orchestrator"
LIBDIR = "/usr/lib/mender-orchestrator"
OURS = {"mender-orchestrator-py": REPO, "mender-orchestrator-canbus": REPO / "drivers/canbus",
        "mender-orchestrator-i2c": REPO / "drivers/i2c",
        "mender-orchestrator-mcuboot": REPO / "drivers/mcuboot",
        "mender-orchestrator-esp32": REPO / "drivers/esp32"}

# distribution -> (Debian 12 package, its version): what bookworm ships
DEBIAN_12 = {
    "click": ("python3-click", "8.1.3"),
    "pyyaml": ("python3-yaml", "6.0"),
    "urllib3": ("python3-urllib3", "1.26.12"),
    "requests": ("python3-requests", "2.28.1"),
    "cryptography": ("python3-cryptography", "38.0.4"),
    "pluggy": ("python3-pluggy", "1.0.0"),
    "stevedore": ("python3-stevedore", "4.0.2"),
    "zstandard": ("python3-zstandard", "0.20.0"),
    "python-can": ("python3-can", "4.1.0"),
    "smbus2": ("python3-smbus2", "0.4.2"),
    "crcmod": ("python3-crcmod", "1.7"),  # smp's; PyPI has no wheel of it
    "cffi": ("python3-cffi", "1.15.1"),
    "pycparser": ("python3-pycparser", "2.21"),
    "charset-normalizer": ("python3-charset-normalizer", "3.0.1"),
    "idna": ("python3-idna", "3.3"),
    "certifi": ("python3-certifi", "2022.9.24"),
    "wrapt": ("python3-wrapt", "1.14.1"),
    "packaging": ("python3-packaging", "23.0"),
    "typing-extensions": ("python3-typing-extensions", "4.4.0"),
    "pyserial": ("python3-serial", "3.5"),
    "intelhex": ("python3-intelhex", "2.3.0"),
}
# pure-Python distributions published as sdists only: their wheels are built here
SDIST_ONLY = {"esptool"}
# what the support scripts run besides the orchestrator
TOOLS = ["jq"]


def run(*argv: str | Path, **kwargs: object) -> None:
    subprocess.run([str(arg) for arg in argv], check=True, **kwargs)  # type: ignore[call-overload]


def requirements(dist: Distribution) -> list[Requirement]:
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["extra"] = ""
    found = [Requirement(text) for text in dist.requires or []]
    return [req for req in found if req.marker is None or req.marker.evaluate(environment)]


def resolve() -> tuple[dict[str, str], dict[str, str]]:
    """(Debian packages, vendored distribution -> version) for everything our three need."""
    wanted: dict[str, list[Requirement]] = {}
    todo = list(OURS)
    seen: set[str] = set()
    debian: dict[str, str] = {}
    vendored: dict[str, str] = {}
    while todo:
        name: str = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for req in requirements(distribution(name)):
            wanted.setdefault(canonicalize_name(req.name), []).append(req)
            todo.append(req.name)
    # a second pass: a Debian package takes a distribution's dependencies with it
    for name in sorted(wanted):
        if name in OURS:
            continue
        package = DEBIAN_12.get(name)
        if package and all(Version(package[1]) in req.specifier for req in wanted[name]):
            debian[name] = package[0]
        else:
            vendored[name] = distribution(name).version
    needed = _needed(debian, vendored)
    return ({n: p for n, p in debian.items() if n in needed},
            {n: v for n, v in vendored.items() if n in needed})


def _needed(debian: dict[str, str], vendored: dict[str, str]) -> set[str]:
    """Distributions reached from ours through vendored ones only: Debian's packages bring
    their own dependencies."""
    needed: set[str] = set()
    todo = list(OURS)
    while todo:
        for req in requirements(distribution(todo.pop())):
            name = canonicalize_name(req.name)
            if name not in needed and name not in OURS:
                needed.add(name)
                if name in vendored:
                    todo.append(name)
    return needed


def wheels(work: Path, vendored: dict[str, str]) -> list[Path]:
    directory = work / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", directory,
        *OURS.values())
    binary = {name: v for name, v in vendored.items() if name not in SDIST_ONLY}
    if binary:
        run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "-d", directory,
            *(f"{name}=={version}" for name, version in sorted(binary.items())))
    built = {name: v for name, v in vendored.items() if name in SDIST_ONLY}
    if built:
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", directory,
            *(f"{name}=={version}" for name, version in sorted(built.items())))
    return sorted(directory.glob("*.whl"))


def wrapper(module: str, function: str) -> str:
    # -I: neither PYTHONPATH nor the user's site directory can change what runs as root
    return (
        "#!/usr/bin/python3 -I\n"
        "import os\nimport sys\n\n"
        "# the private site directory, found from this script so an unpacked tree runs too\n"
        "sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)),\n"
        f"                                \"..\", \"lib\", \"{PACKAGE}\"))\n"
        f"from {module} import {function}\n\n"
        f"sys.exit({function}())\n"
    )


def install_tree(stage: Path, wheel_files: list[Path]) -> None:
    lib = stage / LIBDIR.lstrip("/")
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
        "--no-index", "--target", lib, *wheel_files)
    shutil.rmtree(lib / "bin", ignore_errors=True)  # their shebangs name this build's Python
    bindir = stage / "usr/bin"
    bindir.mkdir(parents=True)
    for name in OURS:
        dist = Distribution.at(next(lib.glob(f"{name.replace('-', '_')}-*.dist-info")))
        for entry in dist.entry_points.select(group="console_scripts"):
            module, function = entry.value.split(":")
            script = bindir / entry.name
            script.write_text(wrapper(module, function))
            script.chmod(0o755)
    run("/usr/bin/python3", "-m", "compileall", "-q", "-j", "1", "-s", stage, "-p", "/",
        "--invalidation-mode", "unchecked-hash", lib)


def cli(stage: Path, *args: str | Path, **kwargs: object) -> str:
    """The staged CLI, run by the build's Python (the target's may lack the Debian deps)."""
    code = (f"import sys; sys.path.insert(0, {str(stage / LIBDIR.lstrip('/'))!r}); "
            "from orchestrator_core.cli import main; sys.argv[0] = 'mender-orchestrator'; main()")
    result = subprocess.run([sys.executable, "-I", "-c", code, *map(str, args)], check=True,
                            capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    return str(result.stdout)


def add_files(stage: Path) -> None:
    cli(stage, "install-support", "--destdir", stage, "--prefix", "/usr", "--bindir", "/usr/bin")
    for directory, mode in (("etc/mender-orchestrator", 0o755),
                            ("var/lib/mender-orchestrator", 0o700)):
        (stage / directory).mkdir(parents=True, exist_ok=True)
        (stage / directory).chmod(mode)
    man = stage / "usr/share/man/man1"
    with tempfile.TemporaryDirectory() as pages:
        code = (f"import sys; sys.path.insert(0, {str(stage / LIBDIR.lstrip('/'))!r}); "
                "from orchestrator_core.manpages import main; main()")
        run(sys.executable, "-I", "-c", code, pages, stdout=subprocess.DEVNULL)
        man.mkdir(parents=True)
        for page in sorted(Path(pages).iterdir()):
            # mtime=0: the same sources give the same package
            with gzip.GzipFile(man / f"{page.name}.gz", "wb", 9, mtime=0) as out:
                out.write(page.read_bytes())
    completions = {"bash": "usr/share/bash-completion/completions/mender-orchestrator",
                   "zsh": "usr/share/zsh/vendor-completions/_mender-orchestrator",
                   "fish": "usr/share/fish/vendor_completions.d/mender-orchestrator.fish"}
    for shell, path in completions.items():
        (stage / path).parent.mkdir(parents=True, exist_ok=True)
        (stage / path).write_text(cli(stage, "completion", shell))
    doc = stage / "usr/share/doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {PACKAGE}\n\nFiles: *\nLicense: Apache-2.0\n"
        " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n"
        f" The vendored distributions under {LIBDIR} carry their own licences in their\n"
        " .dist-info directories.\n")


def architecture(wheel_files: list[Path]) -> str:
    if all(path.name.endswith("-none-any.whl") for path in wheel_files):
        return "all"
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()


def control(stage: Path, version: str, arch: str, debian: dict[str, str],
            vendored: dict[str, str]) -> str:
    size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()) // 1024
    python = "python3 (>= 3.11)" if arch == "all" else "python3 (>= 3.11), python3 (<< 3.12)"
    depends = ", ".join([python, *sorted(set(debian.values())), *TOOLS])
    bundled = ", ".join(f"{name} {v}" for name, v in sorted(vendored.items())) or "none"
    return (
        f"Package: {PACKAGE}\nVersion: {version}-1\nArchitecture: {arch}\n"
        "Maintainer: mender-orchestrator-py developers <noreply@localhost>\n"
        f"Installed-Size: {size}\nDepends: {depends}\n"
        "Recommends: mender-client | mender-update\nSection: admin\nPriority: optional\n"
        "Description: pluggable multi-component OTA update orchestrator for Mender\n"
        " Updates every Component of a System to a Manifest, group by group, and rolls\n"
        " all of them back on failure. Ships the mender-orchestrator-manifest Update\n"
        " Module, the inventory script, the rootfs-image Interface, the boot-time resume\n"
        " unit and the canbus, i2c, mcuboot and esp32 drivers.\n"
        f" Bundled Python distributions: {bundled}.\n"
    )


def build(out: Path) -> Path:
    version = distribution("mender-orchestrator-py").version
    debian, vendored = resolve()
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        stage = work / "root"
        wheel_files = wheels(work, vendored)
        install_tree(stage, wheel_files)
        add_files(stage)
        arch = architecture(wheel_files)
        (stage / "DEBIAN").mkdir()
        (stage / "DEBIAN/control").write_text(control(stage, version, arch, debian, vendored))
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{PACKAGE}_{version}-1_{arch}.deb"
        run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, target,
            stdout=subprocess.DEVNULL)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_deb.py OUTDIR")
    os.umask(0o022)
    print(build(Path(sys.argv[1])))

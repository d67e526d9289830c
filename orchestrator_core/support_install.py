"""``mender-orchestrator install-support``: the Mender-side files, from the installed package.

The same files at the same paths, with the same modes, as ``make -C support install``, so a
device or an image build that got the orchestrator from a wheel needs no checkout. The
support/Makefile stays for image builds that have make but no Python on the build host; a
test keeps the two installing identical trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from orchestrator_core.atomic import write_bytes
from orchestrator_core.errors import ConfigError

UNIT_NAME = "mender-orchestrator-resume.service"

# (file in the package, path under datadir): all of them programs the Mender client runs
PROGRAMS = (
    ("modules/v3/mender-orchestrator-manifest", "mender/modules/v3/mender-orchestrator-manifest"),
    ("inventory/mender-inventory-mender-orchestrator",
     "mender/inventory/mender-inventory-mender-orchestrator"),
    ("interfaces/v1/rootfs-image", "mender-orchestrator/interfaces/v1/rootfs-image"),
)


@dataclass(frozen=True)
class Layout:
    destdir: Path
    prefix: str = "/usr"
    bindir: str = "/usr/bin"
    datastore: str = "/var/lib/mender-orchestrator"
    persistent: str = "/data"

    def staged(self, path: str) -> Path:
        """``path`` (absolute on the device) under the staging root."""
        return self.destdir / path.lstrip("/")

    @property
    def datadir(self) -> str:
        return f"{self.prefix.rstrip('/')}/share"

    @property
    def unitdir(self) -> str:
        return f"{self.prefix.rstrip('/')}/lib/systemd/system"


def support_files() -> Traversable:
    return resources.files("orchestrator_core") / "support_files"


def unit_text(layout: Layout) -> str:
    template = (support_files() / "systemd" / f"{UNIT_NAME}.in").read_text()
    return template.replace("@BINDIR@", layout.bindir).replace("@DATASTORE@", layout.datastore)


def _write(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_bytes(target, data, mode)
    # the umask may have taken bits off the requested mode
    target.chmod(mode)


def _link_datastore(layout: Layout) -> Path | None:
    """As Mender links /var/lib/mender to /data/mender: when the persistent partition exists,
    the datastore becomes a link into it so it survives a root filesystem update."""
    if not layout.staged(layout.persistent).is_dir():
        return None
    target = f"{layout.persistent.rstrip('/')}/mender-orchestrator"
    layout.staged(target).mkdir(parents=True, exist_ok=True, mode=0o700)
    link = layout.staged(layout.datastore)
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if link.is_dir() and not link.is_symlink():
        try:
            link.rmdir()
        except OSError:
            # a datastore that already holds files is never replaced: that is the user's to move
            raise ConfigError(f"{link} holds files; move them to {layout.staged(target)} "
                              "and run install-support again") from None
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    return link


def install(layout: Layout) -> list[Path]:
    """Install every file; returns the paths written, in order."""
    written = []
    for source, relative in PROGRAMS:
        target = layout.staged(f"{layout.datadir}/{relative}")
        _write(target, (support_files() / source).read_bytes(), 0o755)
        written.append(target)
    unit = layout.staged(f"{layout.unitdir}/{UNIT_NAME}")
    _write(unit, unit_text(layout).encode(), 0o644)
    written.append(unit)
    link = _link_datastore(layout)
    if link is not None:
        written.append(link)
    return written


def _absolute(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith("/"):
        raise click.BadParameter(f"expected an absolute path on the device, got {value!r}")
    return value


@click.command("install-support")
@click.option("--destdir", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Staging root prepended to every path (an image tree).")
@click.option("--prefix", default="/usr", show_default=True, callback=_absolute,
              help="Files go to PREFIX/share and PREFIX/lib/systemd/system.")
@click.option("--bindir", default="/usr/bin", show_default=True, callback=_absolute,
              help="Where mender-orchestrator is on the device (for the systemd unit).")
@click.option("--datastore", default="/var/lib/mender-orchestrator", show_default=True,
              callback=_absolute, help="The orchestrator's datastore (for the systemd unit).")
@click.option("--persistent", default="/data", show_default=True, callback=_absolute,
              help="Persistent partition: when DESTDIR/PERSISTENT is a directory, the datastore "
                   "becomes a link to PERSISTENT/mender-orchestrator.")
def install_support(destdir: Path, prefix: str, bindir: str, datastore: str,
                    persistent: str) -> None:
    """Install the Update Module, the inventory script, the rootfs-image Interface and the
    boot-time systemd unit at the paths the Mender client and systemd read."""
    for path in install(Layout(destdir, prefix, bindir, datastore, persistent)):
        click.echo(f"installed {path}")

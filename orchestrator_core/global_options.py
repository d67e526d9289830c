"""The global ``-c/--config``, ``--data-dir``, ``--datastore`` and ``--topology-dir`` options.

As the Mender client's ``-c``/``-d``: an option given on the command line wins over the
environment variable for the same directory, which wins over the built-in default. The
options are turned into that environment for ``load_config``, so the one place that resolves
directories stays config.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

if TYPE_CHECKING:
    from orchestrator_core.config import Config

F = TypeVar("F", bound=Callable[..., Any])


class Locations(NamedTuple):
    """Where the command line says the files are; ``None`` leaves it to env and defaults."""

    config_file: Path | None = None
    data_dir: Path | None = None
    datastore: Path | None = None
    topology_dir: Path | None = None

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        from orchestrator_core import config

        env = dict(base)
        for name, value in (
            (config.ENV_DATA_DIR, self.data_dir),
            (config.ENV_DATASTORE_DIR, self.datastore),
            (config.ENV_TOPOLOGY_DIR, self.topology_dir),
        ):
            if value is not None:
                env[name] = str(value)
        return env

    def load_config(self) -> Config:
        from orchestrator_core.config import load_config

        # exported too: a driver that keeps its own records under the datastore (the i2c
        # driver's) and the Interfaces it starts must see the directories the flags chose
        os.environ.update(self.environment({}))
        return load_config(self.environment(os.environ), self.config_file)


def _directory(flag: str, env: str, default: str, what: str) -> Callable[[F], F]:
    return click.option(
        flag,
        type=click.Path(path_type=Path, file_okay=False),
        metavar="DIR",
        help=f"{what} Default: ${env}, else {default}.",
    )


def location_options(command: F) -> F:
    """The four options, for the top-level group."""
    decorators = [
        click.option(
            "-c",
            "--config",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            metavar="FILE",
            help="The configuration file; the fallback <datastore>/mender-orchestrator.conf "
            "still fills in the keys it lacks. Default: "
            "$MENDER_ORCHESTRATOR_CONF_DIR/mender-orchestrator.conf, "
            "else /etc/mender-orchestrator/mender-orchestrator.conf.",
        ),
        _directory(
            "--data-dir",
            "MENDER_ORCHESTRATOR_DATA_DIR",
            "/usr/share/mender-orchestrator",
            "Directory holding interfaces/v1/ (the executable Interfaces).",
        ),
        _directory(
            "--datastore",
            "MENDER_ORCHESTRATOR_DATASTORE_DIR",
            "/var/lib/mender-orchestrator",
            "Directory of the journal, the lock, the stored Manifests and the work files.",
        ),
        _directory(
            "--topology-dir",
            "MENDER_ORCHESTRATOR_TOPOLOGY_DIR",
            "the datastore",
            "Directory holding topology.yaml.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command

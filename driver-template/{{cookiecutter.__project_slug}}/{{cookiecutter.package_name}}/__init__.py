"""Mender Orchestrator driver for the `{{ cookiecutter.driver_name }}` interface."""

from importlib.metadata import version

# one version source: pyproject.toml, through the installed metadata
__version__ = version("{{ cookiecutter.__project_slug }}")

"""A CLI-compatible, pluggable implementation of Mender Orchestrator."""

DISTRIBUTION = "mender-orchestrator-py"


def __getattr__(name: str) -> str:
    # the version is pyproject.toml's, read from the installed metadata only when asked for:
    # the inventory poll imports this package on every run and never needs it
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(DISTRIBUTION)
        except PackageNotFoundError:  # run from a source tree that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

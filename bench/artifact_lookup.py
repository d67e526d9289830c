"""Finding the Artifacts of many component types in a directory whose files are not named
after them, next to the floor of reading every header once, measured in the same run.

A Manifest names each component type's Artifact; a directory source looks for
``<artifact_name>.mender`` first, else reads the header of every ``.mender`` file there until
one holds that name. N Artifacts (module-image, written by Debian's ``mender-artifact``) named
``part<i>-v2`` are stored as ``release-<i>.mender``, then, best of three runs each:
  floor          read_header of each file once
  planning       the N lookups as make_plan does them (file names remembered for the pass)
  one at a time  the same N lookups with nothing remembered, as every lookup outside a plan
                 does: each reads the headers of the files before its own, N*(N+1)/2 in all
Target: planning within a small factor of the floor, and linear in N.

Run: .venv/bin/python bench/artifact_lookup.py [--artifacts 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator_core.artifact import read_header, sources
from orchestrator_core.config import Config, load_config

RUNS = 3


def make_store(root: Path, count: int) -> Path:
    store = root / "store"
    store.mkdir()
    payload = root / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 16)
    for index in range(count):
        subprocess.run(
            ["mender-artifact", "write", "module-image", "-T", "bench", "-t", f"part{index}",
             "-n", f"part{index}-v2", "-f", str(payload), "-o",
             str(store / f"release-{index}.mender")],
            check=True, capture_output=True,
        )
    return store


def config_for(root: Path, store: Path) -> Config:
    conf = root / "conf"
    conf.mkdir()
    (conf / "mender-orchestrator.conf").write_text(
        json.dumps({"ArtifactSources": [{"Type": "directory", "Path": str(store)}]})
    )
    return load_config({
        "MENDER_ORCHESTRATOR_CONF_DIR": str(conf),
        "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(root / "datastore"),
        "MENDER_ORCHESTRATOR_DATA_DIR": str(root / "data"),
    })


def best_of(measure: Callable[[], None]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        measure()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = make_store(root, args.artifacts)
        config = config_for(root, store)
        files = sorted(store.glob("*.mender"))
        names = [f"part{index}-v2" for index in range(args.artifacts)]

        def floor() -> None:
            for path in files:
                with path.open("rb") as stream:
                    read_header(stream, source_name=str(path))

        def look_up_all() -> None:
            for name in names:
                found = sources.ConfiguredSources().artifact_source_open(name, config)
                assert found is not None, name
                found[0].close()

        def planning() -> None:
            with sources.names_remembered():
                look_up_all()

        reference = best_of(floor)
        planned = best_of(planning)
        alone = best_of(look_up_all)
    print(f"{args.artifacts} Artifacts in one directory, none named after its Artifact; "
          f"best of {RUNS}")
    print(f"  floor, each header read once   {reference:8.3f} s")
    print(f"  planning (names remembered)    {planned:8.3f} s  ({planned / reference:.2f}x)")
    print(f"  one lookup at a time           {alone:8.3f} s  ({alone / reference:.2f}x)")


if __name__ == "__main__":
    main()

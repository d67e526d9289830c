"""The "ours" contender of ``peers.py``'s install job, in a process of its own.

Header and signature checked, then ``Download`` streamed to the Interface through the
``exec`` driver. It imports what that path needs and nothing of the benchmark (argparse,
statistics, the peers' set-up cost ours some 20 ms of every run when this lived in
``peers.py``), and pauses the garbage collector while it starts, as the console script does.

Run (by peers.py): python install_child.py ARTIFACT PUBLIC_KEY DATA_DIR WORK_DIR
"""

from __future__ import annotations

import sys

from orchestrator_core.startup import pause_collection

DEVICE = "bench-device"  # the device type and the Interface (Update Module) of every Artifact
MODULE = "bench-file"


def main(artifact: str, public: str, data_dir: str, work: str) -> None:
    import logging
    from pathlib import Path

    from orchestrator_core import drivers
    from orchestrator_core.artifact import ArtifactPayload, read_header
    from orchestrator_core.context import Component

    keys = [Path(public)]
    with open(artifact, "rb") as source:
        digest = read_header(source, source_name=artifact, verify_keys=keys)
    driver = drivers.load(Component(DEVICE, MODULE), Path(data_dir))
    with open(artifact, "rb") as source:
        feed = ArtifactPayload(source, source_name=artifact,
                               manifest_digest=digest.manifest_digest, verify_keys=keys)
        ctx = driver.context(log=logging.getLogger("bench"), timeout_seconds=3600,
                             work_dir=Path(work), payload=feed)
        driver.run_state("download", ctx)


if __name__ == "__main__":
    pause_collection()
    main(*sys.argv[1:])

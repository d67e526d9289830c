"""The fix for an error message, where one is known: the README's "Troubleshooting by error
message" table in code, in one place (tests/test_views.py keeps the two in step).

Shown under an ``error:`` line on a terminal; the Mender log format never carries them.
"""

from __future__ import annotations

import re

# (what the message says, what to do), in the README table's order and words
HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), hint)
    for pattern, hint in (
        (r"^Topology \S+ does not exist",
         "put the Topology there or set `MENDER_ORCHESTRATOR_TOPOLOGY_DIR`"),
        (r"interface_args: expected a list of strings", 'write `["1"]`, not `[1]`'),
        (r"no components list, and no split components file is named|must be in exactly one "
         r"place",
         "keep `components:` in the Topology or in the split file, not both, not neither"),
        (r"Interface '[^']*' not found: no executable",
         "install the executable (chmod +x) or the driver package; the message lists what "
         "exists"),
        (r"exists but is not executable", "`chmod +x` it"),
        (r"component_types has no entry for",
         "every Topology component_type needs a Manifest entry"),
        (r"system_types_compatible .* does not contain the Topology's system_type",
         "the Manifest is for another System"),
        (r"the Provides query did not report", "the Interface must report its version key"),
        (r"Identity id=\S+ is also the id of",
         "two Components of one type answer the same ID: fix their `interface_args`"),
        (r"the Identity query gave id=",
         "IDs may not contain `/`, `=`, NUL or line breaks"),
        (r"NeedsArtifactReboot (query with|printed)",
         "answers are Yes/No/Automatic (case-insensitive)"),
        (r"killed after InterfaceTimeoutSeconds=",
         "the Interface hung; raise the limit only if it is really that slow"),
        (r"checksum mismatch|signature does not verify|not signed",
         "the Artifact is corrupt or not signed with a configured key"),
        (r"does not contain .*device_type", "the Artifact is for another component_type"),
        (r"another mender-orchestrator is working on this System",
         "wait: one orchestrator at a time holds `<datastore>/lock`"),
        (r"a deployment is running on this System right now",
         "the inventory poll met a running deployment; the next poll reports"),
        (r"^deployment \d+ .* is still in progress",
         "`mender-orchestrator resume` or `rollback` first"),
        (r"nothing to resume", "no deployment is in progress (`status` shows the last one)"),
        (r"journal .* cannot be opened",
         "move `<datastore>/journal.sqlite` aside (its deployment is then forgotten)"),
    )
)


def hint_for(message: str) -> str | None:
    """What to do about ``message``, if the table knows."""
    return next((hint for pattern, hint in HINTS if pattern.search(message)), None)

"""The fix for an error message, where one is known: the README's "Troubleshooting by error
message" table in code, in one place (tests/test_views.py keeps the two in step).

Shown under an ``error:`` line on a terminal; the Mender log format never carries them.
"""

from __future__ import annotations

import re

# (what the message says, a regular expression; what to do), in the README table's order and
# words. Compiled on first use (re keeps them), not at import: every run imports this module,
# and only a run that logs an error on a terminal looks anything up.
HINTS: tuple[tuple[str, str], ...] = (
        ('^Topology \\S+ does not exist',
         'put the Topology there or set `MENDER_ORCHESTRATOR_TOPOLOGY_DIR`'),
        ('interface_args: expected a list of strings',
         'write `["1"]`, not `[1]`'),
        ('no components list, and no split components file is named|must be in exactly one place',
         'keep `components:` in the Topology or in the split file, not both, not neither'),
        ("Interface '[^']*' not found: no executable",
         'install the executable (chmod +x) or the driver package; the message lists what exists'),
        ('exists but is not executable',
         '`chmod +x` it'),
        ('component_types has no entry for',
         'every Topology component_type needs a Manifest entry'),
        ("system_types_compatible .* does not contain the Topology's system_type",
         'the Manifest is for another System'),
        ('the Provides query did not report',
         'the Interface must report its version key'),
        ('Identity id=\\S+ is also the id of',
         'two Components of one type answer the same ID: fix their `interface_args`'),
        ('the Identity query gave',
         'IDs may not contain `/`, `=`, NUL or line breaks, nor be longer than 255 bytes '
         '(they name a directory)'),
        ('the Provides query gave .*(NUL|line break)',
         'Provides keys and values are single lines of text'),
        ('NeedsArtifactReboot (query with|printed)',
         'answers are Yes/No/Automatic (case-insensitive)'),
        ('killed after InterfaceTimeoutSeconds=',
         'the Interface hung; raise the limit only if it is really that slow'),
        ('checksum mismatch|signature does not verify|not signed',
         'the Artifact is corrupt or not signed with a configured key'),
        ('does not contain .*device_type',
         'the Artifact is for another component_type'),
        ('another mender-orchestrator is working on this System',
         'wait: one orchestrator at a time holds `<datastore>/lock`'),
        ('a deployment is running on this System right now',
         'the inventory poll met a running deployment; the next poll reports'),
        ('^deployment \\d+ .* is still in progress',
         '`mender-orchestrator resume` or `rollback` first'),
        ('nothing to resume',
         'no deployment is in progress (`status` shows the last one)'),
        ('the journal does not match the steps',
         'the program or its steps changed mid-deployment: `mender-orchestrator rollback`'),
        ('journal .* has format \\d+|its plan has format \\d+',
         'written by another version: finish the deployment with that version'),
        ('journal .* could not be written',
         'the run stopped where it was, recording nothing more; free space (or repair the '
         'file system), then `resume` or `rollback`: a state whose end was not recorded '
         'counts as interrupted'),
        ('journal .* is locked by another process',
         'something other than mender-orchestrator (an `sqlite3` shell?) holds the database; '
         'let it go'),
        ('journal .* is damaged|the plan of deployment \\d+ is damaged',
         'check every Component (`show-provides`), then move `<datastore>/journal.sqlite` '
         'aside (its deployments, one in progress too, are then forgotten)'),
        ('journal .* is empty or cut short',
         'the journal was lost while earlier deployments left files behind; check every '
         'Component, then move the empty file aside as the message says'),
        ('the limit on open files is \\d+',
         'raise it (`ulimit -n`, `LimitNOFILE=` of the unit running it)'),
        ('files under .* could not be removed',
         'the deployment ended and is journaled; unmount what an Interface left in `tmp/`: '
         "the next deployment's end removes the rest"),
        ('its File API directory .* vanished',
         'something deleted `<datastore>/work/<id>/` during the deployment; its payload is '
         'gone with it, so the state usually fails and the System rolls back'),
)


def hint_for(message: str) -> str | None:
    """What to do about ``message``, if the table knows."""
    return next((hint for pattern, hint in HINTS if re.search(pattern, message)), None)

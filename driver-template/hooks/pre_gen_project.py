"""Refuse names that would give a package pip or the orchestrator cannot use."""

import re
import sys

DRIVER = "{{ cookiecutter.driver_name }}"
PACKAGE = "{{ cookiecutter.package_name }}"

problems = []
if not re.fullmatch(r"[a-z][a-z0-9_-]*", DRIVER):
    problems.append(
        f"driver_name {DRIVER!r}: use lowercase letters, digits, '-' and '_', starting with a "
        "letter (it is the Topology's `interface:` value and the entry-point name)"
    )
if not PACKAGE.isidentifier() or PACKAGE != PACKAGE.lower():
    problems.append(f"package_name {PACKAGE!r}: expected a lowercase Python identifier")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)

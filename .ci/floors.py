"""Print pip constraints pinning every declared dependency to its declared floor.

``make test-floors`` installs the package with these constraints and runs the suite, which
proves the floors in ``pyproject.toml`` (``name>=X``) are versions the code works with.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)")


def main() -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    missing = []
    for requirement in project["dependencies"]:
        m = FLOOR.match(requirement)
        if m is None:
            missing.append(requirement)
            continue
        print(f"{m.group(1)}=={m.group(3)}")
    if missing:
        print(f"dependencies without a '>=' floor: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

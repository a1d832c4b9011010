"""Every box process as lean on a development machine as on a box.

pandas, numpy and pyarrow come with the `central` extra (chDB needs them) and are never
installed on a box. sqlite-utils imports them whenever it finds them, which cost 40–60 MB in
each long-running process that opens the ledger (the flow logger measured 77 MB with them),
and no box code uses them. Marking them missing makes `import pandas` fail as it does on a
box, so memory measured here is what a box uses.
"""
from __future__ import annotations

import sys

NOT_ON_A_BOX = ("pandas", "numpy", "pyarrow")


def as_on_a_box() -> None:
    """Make `import pandas` (numpy, pyarrow) raise ImportError in this process."""
    for name in NOT_ON_A_BOX:
        sys.modules.setdefault(name, None)

"""Where the project's data folders are: `prompts/` (templates) and `migrations/` (Alembic).

In a checkout (and an editable install) they sit at the top of the repository; a plain
`pip install .` ships them under `<prefix>/share/discovery/` (pyproject's data-files).
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[1]
INSTALLED = Path(sys.prefix) / "share" / "discovery"


def data_dir(name: str) -> Path:
    """`prompts` or `migrations`: from the repository in a checkout, else where the install put them."""
    root = SOURCE_TREE if (SOURCE_TREE / "pyproject.toml").is_file() else INSTALLED
    return root / name

"""The notebook packages (pandas, matplotlib): optional, imported on first use, with the install
hint when they are missing."""

from __future__ import annotations

import importlib
from typing import Any

NOTEBOOK_HINT = "pip install -e '.[notebook]'"


def notebook_module(module: str, purpose: str) -> Any:
    """Import a notebook dependency on first use, with the install hint if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: {NOTEBOOK_HINT}") from error

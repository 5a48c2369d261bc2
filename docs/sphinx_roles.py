"""A griffe extension for the API reference: Sphinx roles in docstrings as inline code.

posledger's docstrings name other objects Sphinx-style (:func:`replay_all`,
:class:`~posledger.Ledger`) so that they read well in an editor and in ``help()``; MkDocs would
print the role markers literally. This rewrites each role to its name in backticks (the last
dotted part for a ``~`` target, as Sphinx shows it).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)

"""Everything ``posledger`` exports, and every public method of the Ledger, says what it is:
the API reference (mkdocstrings) leaves out what has no docstring, which is how Correction,
KeyOutcome, FillBatchResult and Ledger.keys went missing from it."""

from __future__ import annotations

import inspect

import pytest

import posledger
from posledger import Ledger


@pytest.mark.parametrize("name", posledger.__all__)
def test_every_export_has_its_own_docstring(name: str) -> None:
    assert getattr(posledger, name).__dict__.get("__doc__"), f"posledger.{name} has no docstring"


@pytest.mark.parametrize(
    "name", [n for n in vars(Ledger) if not n.startswith("_")], ids=lambda n: f"Ledger.{n}"
)
def test_every_public_ledger_method_has_a_docstring(name: str) -> None:
    member = vars(Ledger)[name]
    if isinstance(member, property):
        member = member.fget
    elif isinstance(member, classmethod):
        member = member.__func__
    assert inspect.getdoc(member), f"Ledger.{name} has no docstring"

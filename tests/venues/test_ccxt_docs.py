"""The runnable examples of docs/ccxt.md and docs/asyncio.md run as written and print what
their comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def first_example(page: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


@pytest.mark.parametrize(
    ("page", "printed"),
    [
        ("ccxt.md", ["1", "3160", "AGI/USDT:USDT"]),
        ("asyncio.md", ["open: ['ETHUSDT']", "[('ETHUSDT', 'agrees')]"]),
    ],
)
def test_the_page_example_runs(
    page: str, printed: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    exec(compile(first_example(page), page, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.splitlines() == printed

"""DataFrames of history rows, states and problems: exact decimals, typed columns, and the
install hint when pandas is missing."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from posledger import InvalidInput, Ledger
from posledger.audit import (
    HISTORY_COLUMNS,
    STATE_COLUMNS,
    history_rows,
    plot_position,
    replay_all,
    to_dataframe,
    verify,
)
from tests.audit.stores import BTC, build, corrupt, source_of
from tests.conftest import T0
from tests.helpers import at


def test_history_and_states_as_dataframes_keep_decimals(store: Ledger, ledger_url: str) -> None:
    pd = pytest.importorskip("pandas")
    frame = to_dataframe(history_rows(store, BTC))
    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert len(frame) == 17
    for column in ("size_before", "size_after", "signed_size_after", "qty", "price", "fee"):
        assert frame[column].dtype == object, column
    assert all(isinstance(v, Decimal) for v in frame["signed_size_after"])
    assert frame["signed_size_after"].tolist()[:5] == [0, 0, 1, 3, 3]
    assert frame.loc[frame["version"] == 3, "price"].item() == Decimal("100")
    assert isinstance(frame["time"].dtype, pd.DatetimeTZDtype) and str(frame["time"].dt.tz) == "UTC"
    assert frame["time"].iloc[-1] == pd.Timestamp(at(15))
    assert str(frame["version"].dtype) == "int64"
    assert str(frame["evidence_seq"].dtype) == "Int64"
    assert frame["reduce_only"].dtype == bool
    assert frame.loc[frame["version"] == 11, "evidence_size"].item() == Decimal(2)

    states = to_dataframe(replay_all(source_of(store, ledger_url)))
    assert list(states.columns) == list(STATE_COLUMNS)
    assert states["size"].dtype == object and all(isinstance(v, Decimal) for v in states["size"])
    assert states.set_index("symbol").loc["ETHUSDT", "signed_size"] == Decimal(3)
    assert list(to_dataframe([]).columns) == list(HISTORY_COLUMNS)
    with pytest.raises(InvalidInput):
        to_dataframe([1, 2])  # type: ignore[arg-type]


def test_problems_as_a_dataframe_and_as_html() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        expected = corrupt(ledger)
        report = verify(ledger)
    page = report._repr_html_()
    assert page.count("<tr>") == len(expected) + 1 and "problem(s)" in page
    pd = pytest.importorskip("pandas")
    frame = to_dataframe(report)
    assert list(frame.columns) == ["key", "check", "version", "detail"]
    assert len(frame) == len(expected)
    assert str(frame["version"].dtype) == "Int64" and frame["version"].isna().sum() == 1
    assert set(frame["check"]) == {c.value for _, c in expected}
    assert isinstance(frame, pd.DataFrame)


def test_missing_notebook_packages_say_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[notebook\]'"):
        to_dataframe([])
    with pytest.raises(ImportError, match=r"plot_position needs matplotlib"):
        plot_position([], BTC)

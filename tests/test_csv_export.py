"""CSV exports are safe to open in a spreadsheet: text that would run as a formula stays text."""

from __future__ import annotations

import csv
import io

import pytest

from app.csv_export import csv_lines


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1 555", "'+1 555"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Fugue in G", "Fugue in G"),
        ("a=b", "a=b"),
        ("Side A\rSide B", "Side A\rSide B"),  # quoted, so the row stays whole
        (-2500, "-2500"),  # amounts are numbers, and stay numbers
        (None, ""),
    ],
)
def test_cells_that_start_a_formula_are_written_as_text(cell: object, written: str) -> None:
    text = "".join(csv_lines(["value"], [[cell]]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["value"], [written]]

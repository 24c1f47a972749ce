"""Errors that speak the user's language: which file, which row, which column, why."""

from __future__ import annotations

from pathlib import Path


class AllianceFlowError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(AllianceFlowError):
    """A configuration or metadata value is wrong; raised before any model runs."""


class DataError(AllianceFlowError):
    """An input table is invalid.

    `row` is the line number a spreadsheet shows (the header is line 1, the
    first data row line 2), so that users can jump straight to it.
    """

    def __init__(
        self,
        file: str | Path,
        reason: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file)
        self.row = row
        self.column = column
        self.reason = reason
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {reason}")


def spreadsheet_row(index_position: int) -> int:
    """Line number shown by a spreadsheet for the data row at 0-based position."""
    return index_position + 2


# The last line of the log of a command that finished (see cli.main, reports.dataset_failure)
DONE_MARK = "DONE: allianceflow "

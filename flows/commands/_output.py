"""How commands print: never hard-wrapped where the output is not a terminal, and tables that keep every path
whole in an 80-column terminal.

Rich hard-wraps every printed line at the console width, which is 80 columns when stdout is a file or a pipe:
a long path then comes out split across lines ("does not exist" on the next one), and whether a test's grep
finds it depends on how long its temporary directory happened to be. ``console()`` prints lines soft-wrapped
(the terminal wraps them, the text keeps them whole). Table cells cannot be soft-wrapped, so paths in them are
shown relative to the data directory where they lie inside it and broken only after a ``/`` (or, inside one
over-long name, after a ``.``) to fit their column: ``fit_path``.
"""

from __future__ import annotations

import os
import re

from rich.console import Console

#: Characters a table's borders and padding take: 3 per column plus 1.
BORDER_PER_COLUMN = 3


def console(stderr: bool = False) -> Console:
    """The console every command prints through: lines are never hard-wrapped (tables still fit the width)."""
    return Console(stderr=stderr, soft_wrap=True)


def shown_path(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``base`` (default: the data directory) when it lies inside it, else whole."""
    if path is None:
        return ""
    text = os.fspath(path)
    if "://" in text:
        return text
    if base is None:
        from ms2core.paths import data_dir

        base = data_dir()
    try:
        rel = os.path.relpath(os.path.abspath(text), os.path.abspath(os.fspath(base)))
    except ValueError:  # another drive
        return text
    return text if rel == ".." or rel.startswith(".." + os.sep) else rel


def _pieces(token: str) -> list[str]:
    """A path's pieces, each ending at a break point: after every '/', and after '.' inside long names."""
    return [p for p in re.split(r"(?<=/)|(?<=\.)", token) if p]


def fit_path(token: str, width: int) -> str:
    """``token`` broken into lines of at most ``width`` characters, only after a '/' (or a '.' where one name
    is longer than the line); a single piece longer than ``width`` stays whole (rich folds it)."""
    if width <= 0 or len(token) <= width:
        return token
    lines, line = [], ""
    for piece in _pieces(token):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    return "\n".join(lines)


def fit_text(text: str, width: int) -> str:
    """Every word of ``text`` longer than ``width`` (a path, a URL) broken by ``fit_path``; rich wraps the rest
    at spaces."""
    return re.sub(r"\S+", lambda m: fit_path(m.group(0), width), text)


def value_width(console_width: int, other_widths: list[int]) -> int:
    """Width left for the last column of a table with borders, after columns of ``other_widths``."""
    columns = len(other_widths) + 1
    return max(console_width - sum(other_widths) - BORDER_PER_COLUMN * columns - 1, 10)

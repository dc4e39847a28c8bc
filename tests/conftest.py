"""Test-wide setup: lrtui's log lines reach stderr inside pytest as they do outside it."""

from __future__ import annotations

import logging
import sys
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def lrtui_warnings_on_stderr() -> Iterator[None]:
    """Outside pytest, a warning on the "lrtui" loggers with no logging configured is printed by
    Python's last-resort handler as its message on stderr. pytest puts its own handlers on the
    root logger, which turns that off; this handler does the same, so tests that read stderr
    (capfd) see what a user sees. Subprocess tests (tests/test_logging.py) check the real default.
    """
    handler = logging.StreamHandler(_Stderr())
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("lrtui")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Stderr:
    """Whatever sys.stderr is at the moment of writing (capfd and capsys replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

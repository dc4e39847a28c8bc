"""Line framing of ``events.jsonl``: complete lines out of a stream of bytes, step lines apart from
the rest, and a block cut where a run was resumed."""

from __future__ import annotations

import contextlib
import gc
import re
from typing import Any, Iterator

from lrtui.runlog.format import KIND_RESUME, decode_line

#: Bytes read per chunk when loading; bounds peak memory whatever the file size.
CHUNK_BYTES = 4 << 20
#: A line longer than this is skipped as garbage rather than held in memory.
MAX_LINE_BYTES = 1 << 20

#: Step lines as our writer starts them; other lines (other kinds, other writers, garbage) are
#: found by this pattern and decoded the generic way.
STEP_PREFIX = b'{"kind":"step",'
_OTHER_LINE = re.compile(rb"\n(?!" + re.escape(STEP_PREFIX) + rb")[^\n]*")
#: Bytes every resume line holds (whatever its field order): a block without them has none.
_RESUME_MARK = b'"' + KIND_RESUME.encode() + b'"'


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding millions of small objects.

    Decoding allocates containers that are never cyclic; without this, CPython runs full
    collections over them again and again, which doubles the decode time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _may_hold_long_line(data: bytes) -> bool:
    # A line longer than MAX_LINE_BYTES covers a whole aligned window of half that size, so a
    # window without a newline is the only case that needs a closer look.
    half = MAX_LINE_BYTES // 2
    for start in range(0, len(data) - half + 1, half):
        if data.find(b"\n", start, start + half) < 0:
            return True
    return False


class LineAssembler:
    """Cuts a stream of bytes into blocks of complete lines.

    A last line without its newline is still being written: it is held back until the newline
    comes. A line longer than ``MAX_LINE_BYTES`` is dropped (and counted) without being held.
    """

    def __init__(self) -> None:
        self.partial = b""
        self.skipping = False  # inside an over-long line: drop bytes until its newline

    def feed(self, block: bytes) -> tuple[bytes, int]:
        """Add bytes; return (complete lines, each ending in a newline; over-long lines dropped)."""
        skipped = 0
        if self.skipping:
            newline = block.find(b"\n")
            if newline < 0:
                return b"", 0
            block = block[newline + 1:]
            self.skipping = False
        data = self.partial + block if self.partial else block
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        data = data[:cut]
        if len(self.partial) > MAX_LINE_BYTES:
            self.partial = b""
            self.skipping = True
            skipped += 1
        if data and _may_hold_long_line(data):
            lines = data.split(b"\n")[:-1]
            keep = [ln for ln in lines if len(ln) <= MAX_LINE_BYTES]
            skipped += len(lines) - len(keep)
            data = b"\n".join(keep) + b"\n" if keep else b""
        return data, skipped


def iter_complete_blocks(f: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield (block of complete lines, over-long lines skipped) from a binary file, chunk by chunk."""
    assembler = LineAssembler()
    while True:
        block = f.read(chunk_bytes)
        if not block:
            return
        data, skipped = assembler.feed(block)
        if data or skipped:
            yield data, skipped


def split_step_lines(data: bytes) -> tuple[bytes, int, list[bytes]]:
    """Split a block of complete lines into (step lines, their count, other lines)."""
    text = b"\n" + data
    others: list[bytes] = []
    pieces: list[bytes] = []
    start = 1
    for match in _OTHER_LINE.finditer(text):
        begin, end = match.span()
        if begin >= start:
            pieces.append(text[start:begin + 1])
        if end > begin + 1:
            others.append(text[begin + 1:end])
        start = end + 1
    if start < len(text):
        pieces.append(text[start:])
    step_data = b"".join(pieces) if len(pieces) != 1 else pieces[0]
    return step_data, step_data.count(b"\n"), others


def resume_step(event: dict[str, Any] | None) -> int | None:
    """K of a valid ``resume`` event (its ``step``, an integer >= 0), else None."""
    if event is None or event.get("kind") != KIND_RESUME:
        return None
    step = event.get("step")
    return step if step.__class__ is int and step >= 0 else None


def cut_at_resumes(data: bytes) -> list[tuple[int | None, bytes]]:
    """A block of complete lines cut before each ``resume`` line: ``[(None, lines before the
    first resume), (K, that resume's line and the lines after it, up to the next), ...]``.

    A reader takes the pieces in order, dropping what a resume replaces before it takes the
    lines after it (docs/run-format.md, *Readers of a resumed run*). A block without a resume
    (the usual case, told by one search of the bytes) is one piece.
    """
    if _RESUME_MARK not in data:
        return [(None, data)]
    pieces: list[tuple[int | None, bytes]] = []
    lines = data.split(b"\n")[:-1]
    start, k = 0, None
    for i, line in enumerate(lines):
        if _RESUME_MARK in line:
            step = resume_step(decode_line(line))
            if step is not None:
                if i > start or k is not None:
                    pieces.append((k, b"\n".join(lines[start:i]) + b"\n" if i > start else b""))
                start, k = i, step
    pieces.append((k, b"\n".join(lines[start:]) + b"\n" if len(lines) > start else b""))
    return pieces


__all__ = [
    "CHUNK_BYTES",
    "MAX_LINE_BYTES",
    "LineAssembler",
    "cut_at_resumes",
    "gc_paused",
    "iter_complete_blocks",
    "resume_step",
    "split_step_lines",
]

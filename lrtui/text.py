"""Text from a run shown on a terminal: the one home of stripping what a terminal would obey.

A run's name, a metric's text, a warning's message come from whoever wrote the run. Printed as
they are, an escape sequence in them could recolour, move the cursor, retitle the window or
hide the lines after it (``\\x1b[2J``, ``\\x1b]0;...\\x07``). ``lrtui advise`` and the app show such
text through ``printable``.
"""

from __future__ import annotations

import re

#: A whole escape sequence (CSI ``ESC [ ... final``, OSC/DCS/APC/PM ``ESC ] ... BEL|ST``, or
#: ``ESC`` and one character), and its 8-bit forms; then any other control character.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[@-~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\n\r\t\u2028\u2029]")


def printable(text: object) -> str:
    """``text`` (any value, as ``str``) without escape sequences or control characters; line
    breaks and tabs become spaces, so it stays on one line."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    s = _SEQUENCE.sub("", s)
    s = _LINE_BREAKS.sub(" ", s)
    return _CONTROL.sub("", s)


__all__ = ["printable"]

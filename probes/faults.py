"""Fail-open bookkeeping: a fault in one measurement is reported once and switches off only that one."""

from __future__ import annotations

import logging
from typing import Callable

#: The probe's reports go through logging (a child of "lrtui"): with no logging configured, Python
#: prints each one as one line on stderr; ``logging.getLogger("lrtui")`` silences or redirects them.
log = logging.getLogger("lrtui.probe")


class Faults:
    """Remembers which measurements failed and reports each failure exactly once.

    Args:
        warn: called once per failed measurement with ``(source, message)``; it writes the
            ``warning`` event. It may itself fail (the log may be what broke): that is ignored.
    """

    def __init__(self, warn: Callable[[str, str], None] | None = None) -> None:
        self._warn = warn
        self.disabled: dict[str, str] = {}

    def ok(self, source: str) -> bool:
        """True while the measurement ``source`` has not failed."""
        return source not in self.disabled

    def fail(self, source: str, exc: BaseException | str, *, disables: bool = True) -> None:
        """Switch ``source`` off; the first time, say so (a warning on the ``lrtui.probe`` logger:
        one line on stderr unless logging is configured) and in the run log.

        With ``disables=False`` it is only a notice (said once, nothing is switched off).
        """
        if source in self.disabled:
            return
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        message = message.strip().splitlines()[0][:300] if message.strip() else type(exc).__name__
        self.disabled[source] = message
        line = f"{source} disabled ({message}); training continues" if disables else message
        try:
            log.warning("lrtui probe: %s", line)
        except Exception:  # a handler may fail (stderr closed); training must not notice
            pass
        if self._warn is not None:
            try:
                self._warn(source, message)
            except Exception:
                pass

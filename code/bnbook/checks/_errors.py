"""What a student sees when a check fails: the exception, its hint levels and :func:`hint`.

A failed check raises :class:`CheckFailed`, an ``AssertionError`` (so ``pytest.raises`` and
plain ``assert``-style tests keep working). Its first message says *what* is wrong; the hint
levels, shown on request, say the likely mistake (level 1) and point at the chapter's equation
(level 2). IPython and Jupyter call ``_render_traceback_`` and show only the lines it returns,
so the student reads the message, not the checker's frames.
"""

from __future__ import annotations

__all__ = ["CheckFailed", "NotWrittenYet", "Refused", "hint"]

_last_failure: "CheckFailed | None" = None
_last_level = 0


class CheckFailed(AssertionError):
    """A checker's verdict on a wrong answer.

    ``what`` is the first message (the output, the input, the error and where it sits);
    ``hints[k - 1]`` is hint level ``k``; ``rerun(k)`` is the call that shows level ``k``.
    ``level`` is how many hint levels this exception's message includes.
    """

    def __init__(self, what: str, hints=(), rerun=None, level: int = 0):
        self.what = what
        self.hints = tuple(hints)
        self.rerun = rerun
        self.level = max(0, min(int(level), len(self.hints)))
        super().__init__(self.text(self.level))

    def text(self, level: int) -> str:
        """The message with hint levels ``1..level`` and a line saying how to ask for more."""
        lines = [self.what]
        for k in range(1, min(level, len(self.hints)) + 1):
            lines.append(f"Hint {k}: {self.hints[k - 1]}")
        if level < len(self.hints):
            how = f"{self.rerun(level + 1)}, or hint()" if self.rerun else "hint()"
            lines.append(f"For hint {level + 1}, run {how}.")
        return "\n".join(lines)

    def _render_traceback_(self):  # IPython shows these lines instead of the traceback
        return str(self).splitlines()


class NotWrittenYet(CheckFailed, NotImplementedError):
    """The exercise's stub still raises ``NotImplementedError``."""


class Refused(CheckFailed):
    """The answer calls the implementation it is meant to write."""


def remember(failure: CheckFailed | None) -> None:
    """Record the last check's outcome for :func:`hint` (``None``: it passed)."""
    global _last_failure, _last_level
    _last_failure = failure
    _last_level = failure.level if failure is not None else 0


def hint(level: int | None = None) -> None:
    """Print the next hint (or hint ``level``) for the check that failed last.

    Level 1 is the likely mistake, level 2 the chapter's equation or section to reread. The
    full solution is never shown.
    """
    global _last_level
    if _last_failure is None:
        print("No failed check to give a hint for: the last check passed, or none has run.")
        return
    hints = _last_failure.hints
    if not hints:
        print("This failure has no further hint: its message says all the checker knows.")
        return
    wanted = _last_level + 1 if level is None else int(level)
    if wanted > len(hints):
        print(f"That was the last hint (there are {len(hints)}); reread the section it names "
              f"and compare each line of your code with its equation.")
        return
    wanted = max(wanted, 1)
    print(f"Hint {wanted}: {hints[wanted - 1]}")
    _last_level = max(_last_level, wanted)

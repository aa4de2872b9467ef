"""The project's user-error types: a message for the user, exit code 2, no traceback.

Anything else raised during a run is an internal error and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (a file, a flag, a setting): said in one message, exit code 2.

    A ValueError, so library callers that catch bad values keep working."""

    exit_code = 2

    def report(self) -> str:
        return f"error: {self}"


class ConfigError(UserError):
    """A configuration is invalid. `problems` lists every problem found, so all are fixed at once."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def report(self) -> str:
        lines = [f"configuration error ({len(self.problems)} problem{'s' * (len(self.problems) != 1)}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

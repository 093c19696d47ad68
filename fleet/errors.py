"""Errors the controller reports to people: what went wrong, with what, and the fix."""

from __future__ import annotations


class FleetError(Exception):
    """A user-facing error. The CLI prints ``message`` and ``fix`` and exits with ``exit_code``.

    Args:
        message: what went wrong, naming the thing (file, host, artifact).
        fix: one sentence telling the user what to do about it.
        exit_code: process exit status (2 = bad input, 3 = infrastructure, 1 = tests failed).
    """

    def __init__(self, message: str, fix: str = "", exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


EXIT_OK = 0
EXIT_TESTS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3

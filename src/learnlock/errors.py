"""One exception type for bad user input, so the CLI can print it as one line.

Messages name the API's parameters in backticks (choose another `out`); the CLI shows its own
flag for each (choose another --out), so the library never names a command-line flag.
"""


class LearnlockError(ValueError):
    """Bad input or state that the user can fix; the message says what and how."""


def require(ok: bool, message: str) -> None:
    """The one validation idiom of every settings class: check a value where it enters, and say in
    `message` what was wrong and how to fix it."""
    if not ok:
        raise LearnlockError(message)


class LearnlockWarning(UserWarning):
    """Something the user should hear although nothing failed (an input that could not be
    verified); the CLI prints each as one `warning:` line, every time it happens."""

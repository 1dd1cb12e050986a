"""One exception type for bad user input, so the CLI can print it as one line."""


class LearnlockError(ValueError):
    """Bad input or state that the user can fix; the message says what and how."""

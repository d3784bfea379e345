"""The project's one error type: its message says what is wrong and what to do about it."""


class MocapError(Exception):
    """Bad input or a failed capture. Raised before anything in the user's scene changes."""

"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""


class UserError(Exception):
    """Bad input from the user (a missing file, a corrupt bag, a wrong image, a bad config).

    The message must name the problem and, where there is one, the file."""

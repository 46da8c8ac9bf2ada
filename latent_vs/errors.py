"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""


class UserError(Exception):
    """Bad input from the user (a missing file, a corrupt bag, a wrong image, a bad config).

    The message must name the problem and, where there is one, the file."""


def yaml_error(path: str, e: Exception) -> UserError:
    """A YAML parse error as one line naming the file, line and column, and what is wrong there."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else path
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return UserError(f"{where}: not valid YAML ({what})")

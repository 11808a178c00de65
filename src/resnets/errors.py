"""The project's error types. The command line prints any ``ResnetsError`` as one line, without a traceback."""


class ResnetsError(Exception):
    """A problem with the user's input (a file, a name, a setting), explained in one line."""


class CheckpointError(ResnetsError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


class DataError(ResnetsError, ValueError):
    """A dataset that is missing, empty or malformed."""


class ConfigError(ResnetsError, ValueError):
    """A setting out of range, or an unknown model or recipe name."""


def yaml_problem(e: Exception) -> str:
    """A YAML parser's error in one line, what is wrong and where: "expected ',' or ']' (line 2, column 1)"."""
    problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def archive_problem(e: BaseException) -> str:
    """Why a tar archive could not be read, in one line. ``tarfile.open`` lists each compression it tried on a
    line of its own where none fits: that is a file that is not a tar archive, or a damaged one."""
    text = str(e).strip()
    if text.startswith("file could not be opened successfully"):
        return "not a tar archive (plain, gzip, bzip2 or xz), or a damaged one"
    return (text.splitlines() or [type(e).__name__])[0]

"""The one exception type users can cause; entry points print it as one line and exit non-zero."""

from __future__ import annotations


class SeglakeError(Exception):
    """A problem the user can fix (bad config, missing input, schema mismatch).

    The message is complete on its own: it names the file, key, column or row at fault.
    """


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first non-blank line of an error's text, cut at ``limit`` characters.

    Spark and py4j errors carry whole Java stack traces; a user needs the first line.

    >>> first_line(ValueError("\\nbad value in row 3\\n\\tat org.apache.spark..."))
    'bad value in row 3'
    >>> first_line(KeyError())
    'KeyError'
    """
    line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    return line[:limit] if line and line != "''" else type(err).__name__

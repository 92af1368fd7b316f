"""The one exception type users can cause; entry points print it as one line and exit non-zero."""


class SeglakeError(Exception):
    """A problem the user can fix (bad config, missing input, schema mismatch).

    The message is complete on its own: it names the file, key, column or row at fault.
    """

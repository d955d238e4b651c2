"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class CenterLossError(Exception):
    """A problem the user can fix: bad input, bad data, an occupied run folder, a diverged run."""

    exit_code = 2

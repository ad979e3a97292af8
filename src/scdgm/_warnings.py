"""Warning categories of scdgm, so users (and our tests) can filter them precisely."""


class ScdgmWarning(UserWarning):
    """A warning raised by scdgm about the data or the fit, with advice on what to do."""

"""The one error type a stage reports as a single clear line (and a non-zero exit)."""


class StageError(Exception):
    """A problem the user must fix: bad params, bad data, a failed gate."""


class ParamsError(StageError):
    """A params.yaml key is missing, of the wrong type, or an unknown choice."""

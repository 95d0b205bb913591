"""The one error type a stage reports as a single clear line (and a non-zero exit)."""


class StageError(Exception):
    """A problem the user must fix: bad params, bad data, a failed gate."""


class ParamsError(StageError):
    """A params.yaml key is missing, of the wrong type, or an unknown choice."""


def clip(text: object, limit: int = 60) -> str:
    """A value quoted in an error message: printable, at most `limit` characters (a 4 KB header
    or a binary cell must not become a 4 KB message)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def clip_names(names: list, shown: int = 5) -> str:
    """Column names for a message: each clipped, at most `shown` of them."""
    text = ", ".join(clip(n, 40) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")

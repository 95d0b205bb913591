"""Saving and loading fitted sklearn objects with skops: no pickle (loading executes no code),
only trusted types, and the same bytes for the same object (DVC hashes stay put)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_TYPES = {"functools.partial",  # a partial of a trusted function (select_k_best's scorer)
                 "lifecycle.names.one_hot_name"}  # the featurizer's one-hot feature names


def _skops_io():
    """skops.io, imported without building its default trust list.

    On import skops lists every sklearn estimator to trust by default (`all_estimators()`, which
    imports all of sklearn, pytest included): ~1 s of CPU in every stage that saves or loads a
    model. `loads` never uses that default (it passes its own trusted types, checked against
    TRUSTED_PREFIXES), so the list is built empty; what skops writes and reads is unchanged.
    """
    if "skops.io" not in sys.modules:
        import sklearn.utils

        listing = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = lambda *args, **kwargs: []
        try:
            import skops.io  # noqa: F401
        finally:
            sklearn.utils.all_estimators = listing
    return sys.modules["skops.io"]


def dumps(estimator) -> bytes:
    """A fitted sklearn object as a skops archive (no pickle: loading executes no code), with the
    same bytes for the same object: skops names the archive's members after memory addresses
    and stamps them with the time, so they are renamed in order and stamped 1980-01-01."""
    import io
    import zipfile

    sio = _skops_io()
    raw = zipfile.ZipFile(io.BytesIO(sio.dumps(estimator)))
    names: dict[str, str] = {}
    ids: dict[int, int] = {}

    def canonical(node):
        if isinstance(node, list):
            return [canonical(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "__id__":  # object identity, for shared references: any unique number
                out[key] = ids.setdefault(value, len(ids))
            elif key == "file" and isinstance(value, str):  # a member holding an array
                out[key] = names.setdefault(value, f"{len(names):06d}{Path(value).suffix}")
            else:
                out[key] = canonical(value)
        return out

    schema = json.dumps(canonical(json.loads(raw.read("schema.json"))), indent=2).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for old, new in [*names.items(), ("schema.json", None)]:
            info = zipfile.ZipInfo(new or old, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, schema if new is None else raw.read(old))
    return out.getvalue()


def save(estimator, path) -> None:
    """Save a fitted sklearn object with skops, byte-identical for identical objects (`dumps`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(dumps(estimator))


def loads(data: bytes, trusted: tuple[str, ...] = ()):
    """Load a skops archive, trusting only sklearn/numpy/scipy types (and a functools.partial,
    whose function skops checks on its own), plus types under the `trusted` prefixes (a model
    family's package: `models.trusted_prefixes`)."""
    sio = _skops_io()

    untrusted = sio.get_untrusted_types(data=data)
    prefixes = (*TRUSTED_PREFIXES, *trusted)
    unsafe = [t for t in untrusted if not t.startswith(prefixes) and t not in TRUSTED_TYPES]
    if unsafe:
        raise ValueError(f"skops archive holds types that are not sklearn/numpy or a model "
                         f"family's: {unsafe}")
    return sio.loads(data, trusted=untrusted)


def load(path, trusted: tuple[str, ...] = ()):
    """Load a skops file written by `save` (see `loads` for what it trusts; bundles add a hash
    check on top)."""
    try:
        return loads(Path(path).read_bytes(), trusted)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc

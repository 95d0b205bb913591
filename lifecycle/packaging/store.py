"""The bundle on disk: files plus a manifest of their sha256, written atomically and verified
on every load.

The manifest lists every file the bundle holds; the loader refuses a bundle whose folder holds
a file the manifest does not list, lacks one it lists, or has one whose bytes differ from their
hash, and one that lacks a file of `BUNDLE_FILES` (the files every bundle has: `Bundle` reads
them when it opens). Any other file `build.build_files` adds is verified the same way."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from lifecycle.errors import StageError
from lifecycle.io import json_default

MANIFEST = "manifest.json"
# model.onnx too, unless the estimator has no ONNX converter (inference.json `engine`)
BUNDLE_FILES = ("model.skops", "contract.yaml", "inference.json", "signature.json",
                "reference_stats.json", "model_card.md")


class BundleError(StageError):
    """A bundle that must not be used: tampered, incomplete, or failing its own checks."""


def canonical_json(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=json_default) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_for(files: dict[str, bytes], lineage_info: dict) -> dict:
    """{files: {name: sha256}, version, lineage}; the version hashes the files and the lineage,
    so no byte of the bundle can change without the loader noticing."""
    hashes = {name: sha256(files[name]) for name in sorted(files)}
    return {"version": _version(hashes, lineage_info), "files": hashes, "lineage": lineage_info}


def _version(hashes: dict, lineage_info: dict) -> str:
    return sha256(canonical_json({"files": hashes, "lineage": lineage_info}))[:12]


def write_bundle(dest: str | Path, files: dict[str, bytes], lineage_info: dict) -> dict:
    """Write the bundle files and their manifest; the folder is replaced as a whole."""
    dest = Path(dest)
    lacking = sorted(set(BUNDLE_FILES) - set(files))
    if lacking or MANIFEST in files or any("/" in name or name.startswith(".") for name in files):
        raise BundleError(f"bundle files must include {list(BUNDLE_FILES)} (plain names, no "
                          f"{MANIFEST}), not {sorted(files)}")
    if dest.exists() and any(dest.iterdir()) and not (dest / MANIFEST).exists():
        raise BundleError(f"{dest} exists and is not a bundle: refusing to replace it")
    manifest = manifest_for(files, lineage_info)
    staging = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST).write_bytes(canonical_json(manifest))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return manifest


def remove_bundle(dest: str | Path) -> None:
    """Delete a bundle that failed its checks, so nothing can load it by mistake."""
    dest = Path(dest)
    if (dest / MANIFEST).exists():
        shutil.rmtree(dest)


def verified_files(path: Path) -> dict[str, bytes]:
    """{name: bytes} of every file of the bundle at `path` (the manifest too), each checked
    against the manifest; BundleError naming the file otherwise."""
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path}: no {MANIFEST}, not a bundle (run the package stage)")
    raw = (path / MANIFEST).read_bytes()
    try:
        manifest = json.loads(raw)
        hashes, lineage_info = manifest["files"], manifest["lineage"]
        listed = set(hashes)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path / MANIFEST}: unreadable or incomplete manifest ({exc})") from exc
    if canonical_json(manifest) != raw:
        raise BundleError(f"{path / MANIFEST}: its bytes differ from the manifest it encodes "
                          "(edited after packaging)")
    if not listed >= set(BUNDLE_FILES) or MANIFEST in listed:
        raise BundleError(f"{path / MANIFEST}: lists {sorted(listed)}, a bundle holds at least "
                          f"{sorted(BUNDLE_FILES)}")
    present = {p.name for p in path.iterdir()} - {MANIFEST}
    extra, missing = sorted(present - listed), sorted(listed - present)
    if extra:
        raise BundleError(f"{path}: unexpected file(s) not in the manifest: {', '.join(extra)}")
    if missing:
        raise BundleError(f"{path}: file(s) listed in the manifest are missing: "
                          f"{', '.join(missing)}")
    data = {}
    for name in sorted(listed):
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: not a regular file")
        content = file.read_bytes()
        actual = sha256(content)
        if actual != hashes[name]:
            raise BundleError(f"{file}: sha256 mismatch (manifest {hashes[name][:12]}, file "
                              f"{actual[:12]}): the file changed after packaging")
        data[name] = content
    if _version(hashes, lineage_info) != manifest.get("version"):
        raise BundleError(f"{path / MANIFEST}: version {manifest.get('version')!r} does not "
                          "match its files and lineage (edited after packaging)")
    data[MANIFEST] = raw
    return data

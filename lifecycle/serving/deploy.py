"""Deployment files: which bundles serve, and how traffic is shared between them.

A deployment file (YAML, see deploy/*.yaml) names its variants, each a bundle path, a
registered version or a stage of the model declared in dvc.yaml `artifacts:` (GTO git tags),
and a strategy:

- single: one variant answers everything;
- blue_green: two slots, one live; an admin call switches or rolls back at once, both stay
  loaded so no request fails during the switch;
- canary: a share of customers goes to the challenger, sticky (hash of the customer id);
- shadow: the champion answers, the challenger scores every request too, only logged;
- ab: a deterministic split of customers over the variants; outcomes per variant come from
  feedback (`python -m lifecycle.serving.registry outcomes`).

Routing hashes "<deployment name>:<customer id>", so one customer always meets the same
variant and two deployments split customers independently. A request without a customer id
is routed by its request id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifecycle.errors import StageError
from lifecycle.io import read_yaml_model

log = logging.getLogger("lifecycle.serving")

Strategy = Literal["single", "blue_green", "canary", "shadow", "ab"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(_Strict):
    """Where a variant's bundle comes from: exactly one of bundle, version, stage."""

    bundle: str | None = None  # a bundle directory, e.g. models/bundle
    version: str | None = None  # a GTO version of the model, e.g. v1.2.0
    stage: str | None = None  # a GTO stage of the model, e.g. prod

    @model_validator(mode="after")
    def _exactly_one(self) -> VariantSpec:
        given = [k for k in ("bundle", "version", "stage") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of bundle, version, stage")
        return self


class Deployment(_Strict):
    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    model: str = "churn-model"  # the artifact in dvc.yaml `artifacts:` that versions refer to
    strategy: Strategy = "single"
    engine: Literal["onnx", "sklearn"] = "onnx"
    variants: dict[str, VariantSpec]
    active: str | None = None  # single, blue_green: the live variant (default: the first)
    champion: str | None = None  # canary, shadow: answers by default (default: the first)
    challenger: str | None = None  # canary, shadow: the other one (default: the second)
    share: float | None = Field(default=None, ge=0, le=1)  # canary: challenger's share
    split: dict[str, float] | None = None  # ab: variant -> share of customers, sums to 1

    @model_validator(mode="after")
    def _fits_strategy(self) -> Deployment:
        names = list(self.variants)
        want = {"single": 1, "blue_green": 2, "canary": 2, "shadow": 2}.get(self.strategy)
        if want and len(names) != want:
            raise ValueError(f"strategy {self.strategy} needs {want} variant(s), got {len(names)}")
        if self.strategy == "ab" and len(names) < 2:
            raise ValueError("strategy ab needs at least 2 variants")
        for key in ("active", "champion", "challenger"):
            value = getattr(self, key)
            if value is not None and value not in self.variants:
                raise ValueError(f"{key}: {value!r} is not one of the variants {names}")
        if self.strategy == "canary" and self.share is None:
            raise ValueError("strategy canary needs share (the challenger's share of customers)")
        if self.strategy == "ab":
            if not self.split or set(self.split) != set(names):
                raise ValueError(f"strategy ab needs split with a share for each of {names}")
            if any(v < 0 for v in self.split.values()) or abs(sum(self.split.values()) - 1) > 1e-9:
                raise ValueError("split: shares must be >= 0 and sum to 1")
        if self.champion and self.champion == self.challenger:
            raise ValueError("champion and challenger must differ")
        return self

    @property
    def live(self) -> str:
        """The variant that answers when no split applies."""
        if self.strategy in ("canary", "shadow"):
            return self.champion or list(self.variants)[0]
        return self.active or list(self.variants)[0]

    @property
    def other(self) -> str | None:
        """The challenger (canary, shadow) or the idle slot (blue_green)."""
        if self.strategy in ("canary", "shadow"):
            return self.challenger or next(n for n in self.variants if n != self.live)
        if self.strategy == "blue_green":
            return next(n for n in self.variants if n != self.live)
        return None


def load_deployment(path: str | Path) -> Deployment:
    """Read and check a deployment file; a malformed one is one clear StageError."""
    return read_yaml_model(path, Deployment, "deployment")


def single(bundle: str | Path) -> Deployment:
    """The deployment of one bundle directory."""
    return Deployment(variants={"main": VariantSpec(bundle=str(bundle))})


def bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key): the sticky routing draw."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Router:
    """Picks the variant that answers a request, and the ones that shadow it.

    Blue/green state (the live slot and the one before it) changes under a lock; reading it
    is one attribute read, so requests in flight during a switch never see a half state.
    """

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.live = deployment.live
        self.previous: str | None = None
        self.share = deployment.share  # canary: the challenger's share, changed by `ramp`
        self._lock = threading.Lock()
        if deployment.strategy == "ab":
            edges, total = [], 0.0
            for name, share in deployment.split.items():
                total += share
                edges.append((total, name))
            self._edges = edges

    def route(self, key: str) -> tuple[str, tuple[str, ...]]:
        """(the variant that answers, the variants that only shadow) for a routing key."""
        d = self.deployment
        if d.strategy in ("single", "blue_green"):
            return self.live, ()
        if d.strategy == "shadow":
            return self.live, (d.other,)
        draw = bucket(d.name, key)
        if d.strategy == "canary":
            return (d.other if draw < self.share else self.live), ()
        for edge, name in self._edges:
            if draw < edge:
                return name, ()
        return self._edges[-1][1], ()

    def switch(self, to: str | None = None) -> dict:
        """Blue/green: make `to` (default: the idle slot) live; the old one stays loaded."""
        if self.deployment.strategy != "blue_green":
            raise StageError(f"switch needs strategy blue_green, this is "
                             f"{self.deployment.strategy}")
        with self._lock:
            target = next(n for n in self.deployment.variants if n != self.live) \
                if to is None else to
            if target not in self.deployment.variants:
                raise StageError(f"to: {target!r} is not one of {list(self.deployment.variants)}")
            if target != self.live:
                self.previous, self.live = self.live, target
            return self.state()

    def ramp(self, share: float) -> dict:
        """Canary: give the challenger `share` of customers (1: all of them, the full rollout;
        0: none). Customers keep their draw, so a rising share only moves more of them over."""
        if self.deployment.strategy != "canary":
            raise StageError(f"share needs strategy canary, this is {self.deployment.strategy}")
        if not 0 <= share <= 1:
            raise StageError(f"share: {share} is not between 0 and 1")
        self.share = share
        return self.state()

    def rollback(self) -> dict:
        """Blue/green: make the previously live slot live again."""
        if self.deployment.strategy != "blue_green":
            raise StageError(f"rollback needs strategy blue_green, this is "
                             f"{self.deployment.strategy}")
        with self._lock:
            if self.previous is None:
                raise StageError("nothing to roll back to: no switch happened yet")
            self.live, self.previous = self.previous, self.live
            return self.state()

    def state(self) -> dict:
        d = self.deployment
        out = {"name": d.name, "strategy": d.strategy, "live": self.live,
               "variants": list(d.variants)}
        if d.strategy == "blue_green":
            out["previous"] = self.previous
        if d.strategy in ("canary", "shadow"):
            out["challenger"] = d.other
        if d.strategy == "canary":
            out["share"] = self.share
        if d.strategy == "ab":
            out["split"] = d.split
        return out


# --- model versions through GTO git tags -----------------------------------------------------
REGISTER_FIRST = ("after `make run`, commit dvc.lock and run `make register VERSION=v1.0.0 "
                  "STAGE={stage}` (gto register + gto assign), or give the variant a bundle "
                  "directory instead ({{bundle: models/bundle}})")


def artifact_path(model: str, repo: str | Path = ".") -> str:
    """The path dvc.yaml `artifacts:` declares for `model`."""
    dvc_yaml = Path(repo) / "dvc.yaml"
    artifacts = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("artifacts") or {}
    if model not in artifacts:
        raise StageError(f"{dvc_yaml}: no artifact {model!r} under artifacts: "
                         f"(declared: {sorted(artifacts)})")
    return artifacts[model]["path"]


def revision_of(spec: VariantSpec, model: str, repo: str | Path = ".") -> str:
    """The git commit a registered version or a stage of `model` points at (GTO tags)."""
    import gto.api

    if spec.version:
        ref = f"{model}@{spec.version}"
    else:
        try:
            found = gto.api.find_versions_in_stage(str(repo), model, spec.stage)
        except Exception as exc:  # noqa: BLE001 - gto raises many types for one user problem
            if "Cannot find artifact" not in str(exc):
                raise StageError(f"cannot read GTO stages of {model}: {exc}") from exc
            found = None
        if not found:
            raise StageError(f"no version of {model} is in stage {spec.stage!r} yet: "
                             f"{REGISTER_FIRST.format(stage=spec.stage)}")
        ref = found[0].commit_hexsha
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        raise StageError(f"{model}: no git revision {ref!r} (no such version registered: "
                         f"{REGISTER_FIRST.format(stage='prod')})")
    return proc.stdout.strip()


def bundle_cache(cache: str | Path | None = None) -> Path:
    """The folder fetched bundles are kept in: private to this user (0700), by default under
    the user's cache directory ($XDG_CACHE_HOME or ~/.cache, never a shared /tmp)."""
    root = Path(cache) if cache else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lifecycle" / "bundles"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = root.stat()
    if info.st_uid != os.getuid():
        raise StageError(f"bundle cache {root} belongs to another user: use a folder of yours")
    if info.st_mode & 0o077:
        root.chmod(0o700)
    return root


def locked_hash(rev: str, path: str, repo: str | Path = ".") -> str:
    """The hash `dvc.lock` records at `rev` for the output `path` (a directory: md5 ".dir")."""
    proc = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=repo, capture_output=True,
                          text=True)
    if proc.returncode:
        raise StageError(f"no dvc.lock at {rev[:10]}: cannot verify {path} against it")
    lock = yaml.safe_load(proc.stdout) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path and out.get("md5"):
                return out["md5"]
    raise StageError(f"dvc.lock at {rev[:10]} records no hash for {path}: cannot verify it")


def dvc_hash(path: str | Path) -> str:
    """The md5 DVC records for a file, or for a directory ("<md5>.dir": the md5 of the sorted
    JSON list of {md5, relpath} of its files), computed from the bytes on disk."""
    path = Path(path)
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    entries = sorted(({"md5": hashlib.md5(f.read_bytes()).hexdigest(),
                       "relpath": f.relative_to(path).as_posix()}
                      for f in path.rglob("*") if f.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def fetch_bundle(spec: VariantSpec, model: str, repo: str | Path = ".",
                 cache: str | Path | None = None) -> Path:
    """A local directory holding the variant's bundle; a version or stage is fetched from the
    DVC cache/remote at its git revision (`dvc.api.DVCFileSystem`) into a private cache.

    A fetched or cached bundle must hash to what that revision's `dvc.lock` records for it
    (its manifest alone only proves the bundle agrees with itself): a cached copy that does
    not is deleted and fetched again, a fetch that does not is a StageError. The caller still
    checks the manifest when it loads the bundle, wherever it came from."""
    if spec.bundle:
        return Path(repo) / spec.bundle
    from dvc.api import DVCFileSystem

    rev = revision_of(spec, model, repo)
    path = artifact_path(model, repo)
    expected = locked_hash(rev, path, repo)
    cache = bundle_cache(cache)
    dest = cache / rev / "bundle"
    if dest.exists() and dvc_hash(dest) != expected:
        log.warning("cached bundle %s differs from dvc.lock at %s: fetching it again",
                    dest, rev[:10])
        shutil.rmtree(dest)
    if not dest.exists():
        partial = cache / rev / f"partial-{os.getpid()}-{threading.get_ident()}"
        try:
            DVCFileSystem(str(Path(repo).resolve()), rev=rev).get(path, str(partial),
                                                                  recursive=True)
        except Exception as exc:  # noqa: BLE001 - DVC raises many types for one user problem
            shutil.rmtree(partial, ignore_errors=True)
            raise StageError(f"cannot fetch {path} at {rev[:10]} ({model} "
                             f"{spec.version or spec.stage}): {exc}") from exc
        if (got := dvc_hash(partial)) != expected:
            shutil.rmtree(partial, ignore_errors=True)
            raise StageError(f"{path} fetched at {rev[:10]} hashes to {got}, dvc.lock records "
                             f"{expected}: refusing it (a tampered DVC cache or remote?)")
        if dest.exists():  # another process fetched it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.rename(dest)
    return dest

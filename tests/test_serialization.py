import os

import pytest

from transferkit import serialization
from transferkit.errors import StorageError
from transferkit.serialization import save_torch, write_json, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_full_disk_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    write_text(tmp_path / "last.pt", "previous")
    monkeypatch.setattr(serialization, "_free_bytes", lambda folder: 1000)
    with pytest.raises(
        StorageError, match=r"Not enough disk space to write '.*last.pt': it needs .* has 1,000 bytes free"
    ):
        save_torch({"w": list(range(10_000))}, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_enospc_during_the_write_names_the_space(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError, match="Not enough disk space"):
        write_text(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []

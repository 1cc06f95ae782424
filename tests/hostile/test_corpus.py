"""Run every case of the hostile-input corpus through the real command line.

No case may end in a traceback, exit with another code than its own, or leave out the words
its message must contain. Refusals are exactly one line on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .cases import CASES, Case, counts
from .conftest import run_cli

pytestmark = pytest.mark.slow

_UNSHARE = shutil.which("unshare")


def _can_mount() -> bool:
    if _UNSHARE is None:
        return False
    probe = subprocess.run([_UNSHARE, "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def _isolated(case: Case, argv: list, tmp) -> tuple[int, str, str]:
    """Run in a private mount namespace with ``tmp/disk`` a 160 KiB filesystem."""
    disk = tmp / "disk"
    command = " ".join(["exec", sys.executable, "-m", "transferkit", *(f"'{a}'" for a in map(str, argv))])
    script = (
        f"mount -t tmpfs -o size=160k tmpfs '{disk}' || exit 99; ({command}); code=$?; "
        f"echo listing: $(ls -A '{disk}/out'); exit $code"
    )
    done = subprocess.run([_UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 99, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, world, tmp_path, capsys):
    if case.needs == "unshare" and not _can_mount():
        pytest.skip("needs unshare and a mountable tmpfs (a private mount namespace)")
    argv = case.setup(world, tmp_path)
    capsys.readouterr()
    umask = os.umask(case.env["umask"]) if "umask" in case.env else None
    try:
        if case.needs == "unshare":
            code, out, err = _isolated(case, argv, tmp_path)
        else:
            code = run_cli(*argv)
            out, err = capsys.readouterr()
    finally:
        if umask is not None:
            os.umask(umask)
    assert "Traceback" not in err, err
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if case.code == 2:
        errors = [line for line in err.splitlines() if line.startswith("transferkit: error:")]
        assert len(errors) == 1, err
        message = errors[0]
    else:
        message = out + err
    missing = [word for word in case.words if word not in message]
    assert not missing, f"missing {missing} in: {message}"
    if case.after is not None:
        case.after(world, tmp_path, out + err)


def test_corpus_covers_every_outcome():
    found = counts()
    assert set(found) == {"refused", "skipped", "accepted", "stopped"}, found
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"

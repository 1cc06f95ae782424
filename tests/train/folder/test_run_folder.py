import json
import os
import socket
import subprocess

import pytest

from transferkit.errors import RunError
from transferkit.train.config import TrainConfig
from transferkit.train.folder.out_folder import (
    LOCK_FILE,
    RunLock,
    check_out,
    claim_out,
    is_run_folder,
    remove_leftovers,
)
from transferkit.train.folder.run_folder import check_model_code
from transferkit.train.resume import resumed_config

BASE = {"model": "resnet18", "data": "builtin:digits", "out": "/somewhere/else"}


def _state(phase=0, **config):
    return {"config": {**BASE, **config}, "phase": phase}


def test_lock_refuses_a_second_run_and_is_released(tmp_path):
    lock = claim_out(tmp_path / "run")
    assert (tmp_path / "run" / LOCK_FILE).read_text().split() == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(RunError, match=rf"in use by another run \(process {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    RunLock(tmp_path / "run").acquire().release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    (tmp_path / LOCK_FILE).write_text(f"{child.pid} {socket.gethostname()}\n")
    lock = RunLock(tmp_path).acquire()
    assert lock.held and (tmp_path / LOCK_FILE).read_text().startswith(str(os.getpid()))


def test_lock_of_another_machine_is_respected(tmp_path):
    (tmp_path / LOCK_FILE).write_text("4242 some-other-host\n")
    with pytest.raises(RunError, match="process 4242 on some-other-host.*delete"):
        RunLock(tmp_path).acquire()


def test_out_holding_other_files_needs_overwrite(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunError, match=r"not empty and is not a run folder \(thesis.tex\)"):
        check_out(tmp_path, resume=False)
    check_out(tmp_path, resume=False, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_files_named_like_a_runs_are_not_a_run(tmp_path):
    (tmp_path / "config.json").write_text('{"lr": 0.1, "model": "mine"}')
    (tmp_path / "metrics.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(RunError, match=r"not a run folder \(config.json, metrics.csv\)"):
        check_out(tmp_path, resume=False)
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(model="m", data="d", out=str(tmp_path)).to_dict()))
    assert is_run_folder(tmp_path)
    check_out(tmp_path, resume=False)  # a run that ended before its first checkpoint: started again


def test_check_out_creates_nothing(tmp_path):
    check_out(tmp_path / "a" / "b", resume=False)
    assert not (tmp_path / "a").exists()


def test_leftover_temp_files_are_removed(tmp_path):
    for name in (".last.pt.abc123.tmp", ".metrics.csv.x.tmp", "keep.tmp", ".notes.x.tmp"):
        (tmp_path / name).write_text("")
    assert sorted(remove_leftovers(tmp_path)) == [".last.pt.abc123.tmp", ".metrics.csv.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.x.tmp", "keep.tmp"]


def test_resume_stays_where_the_folder_is_now(tmp_path):
    config = resumed_config(_state(), tmp_path)
    assert config.out == str(tmp_path)


def test_resume_accepts_safe_and_equal_settings(tmp_path):
    config = resumed_config(_state(), tmp_path, {"device": "cpu", "epochs": 9, "seed": 0, "out": str(tmp_path)})
    assert (config.device, config.epochs) == ("cpu", 9)


def test_resume_refuses_settings_that_change_the_result(tmp_path):
    with pytest.raises(RunError, match=r"lr \(None in the run, 0.1 given\), seed \(0 in the run, 2 given\)"):
        resumed_config(_state(), tmp_path, {"lr": 0.1, "seed": 2, "device": "cpu"})
    with pytest.raises(RunError, match="epochs can only grow"):
        resumed_config(_state(epochs=5), tmp_path, {"epochs": 3})
    with pytest.raises(RunError, match="out cannot move it"):
        resumed_config(_state(), tmp_path, {"out": str(tmp_path / "elsewhere")})


def test_longer_epochs_may_not_resplit_finished_phases(tmp_path):
    # gradual over 4 epochs: head 1, unfrozen 3; over 8: head 2, unfrozen 6.
    with pytest.raises(RunError, match="split the strategy's phases differently"):
        resumed_config(_state(phase=1, strategy="gradual", epochs=4), tmp_path, {"epochs": 8})
    # Still in the first phase: it may grow.
    assert resumed_config(_state(phase=0, strategy="gradual", epochs=4), tmp_path, {"epochs": 8}).epochs == 8


def test_code_named_by_a_run_needs_trust(tmp_path):
    code = tmp_path / "net.py"
    code.write_text("def net(): pass\n")
    from transferkit.model.factory import code_origin

    state = {"config": {"model": f"{code}:net"}, "model_code": code_origin(f"{code}:net")}
    with pytest.raises(RunError, match=rf"running code from '{code}'.*pass trust_code"):
        check_model_code(state, tmp_path, trust_code=False)
    assert check_model_code(state, tmp_path, trust_code=True) == []
    code.write_text("def net(): return 1\n")
    assert "changed since the run was trained" in check_model_code(state, tmp_path, trust_code=True)[0]
    with pytest.raises(RunError, match="Cannot resume.*changed since"):
        check_model_code(state, tmp_path, trust_code=True, same_code=True)
    assert check_model_code({"config": {"model": "resnet18"}}, tmp_path, trust_code=False) == []

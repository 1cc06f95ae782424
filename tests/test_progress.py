"""Progress through long passes: a bar on a terminal, plain lines every PERIOD seconds anywhere else."""

import io

import pytest

import transferkit.progress as progress_module
from tests.helpers import make_image_folder, tiny_config
from transferkit.progress import progress, progress_line
from transferkit.train.engine import fit


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_a_line_comes_each_period_with_what_is_left(monkeypatch):
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    lines = []
    assert list(progress(range(4), "epoch 1/3", lines.append)) == [0, 1, 2, 3]
    assert len(lines) == 4 and lines[1].startswith("epoch 1/3: 2 of 4 batches (50%), ")
    assert lines[-1].endswith("about 0 s left")
    assert progress_line("lr-find", 40, None, 12.4, "steps") == "lr-find: 40 steps, 12 s"
    assert progress_line("cache", 1, 3, 10.0) == "cache: 1 of 3 batches (33%), 10 s, about 20 s left"


def test_a_short_pass_adds_no_line_and_no_log_means_silence(monkeypatch):
    lines = []
    assert list(progress(iter([1, 2]), "epoch 1/1", lines.append)) == [1, 2] and lines == []
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    assert list(progress(range(3), "eval", None)) == [0, 1, 2]


def test_on_a_terminal_a_bar_on_stderr_and_no_line(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    lines = []
    assert list(progress(range(5), "epoch 2/4", lines.append)) == list(range(5))
    shown = terminal.getvalue()
    assert lines == [] and "epoch 2/4" in shown and "5/5" in shown and "elapsed" in shown
    assert shown.endswith("\x1b[2K")  # the bar is gone once the pass ends


def test_a_pass_counted_in_images_advances_by_each_batchs_size_and_says_its_speed(monkeypatch):
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    lines = []
    batches = [[0] * 64, [0] * 64, [0] * 22]
    assert list(progress(batches, "predict", lines.append, total=150, unit="images", size=len)) == batches
    assert lines[1].startswith("predict: 128 of 150 images (85%), ") and lines[1].endswith(" images/s")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    list(progress(batches, "predict", None, total=150, unit="images", size=len))
    shown = terminal.getvalue()  # 80 columns: the count is cut as "150/1…"
    assert "150/1" in shown and " images/s" in shown


@pytest.mark.parametrize("strategy", ["full", "freeze"])  # freeze computes a cache first
def test_a_run_off_a_terminal_says_how_far_each_pass_is(tmp_path, monkeypatch, strategy):
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)  # every batch: as a pass of minutes would, each 30 s
    data = make_image_folder(tmp_path / "data", per_class=12, size=16)
    lines = []
    fit(tiny_config(data, tmp_path / "run", epochs=2, strategy=strategy, batch_size=4), log=lines.append)
    text = "\n".join(lines)
    assert "epoch 2/2: 1 of " in text and "epoch 2/2, validation: 1 of " in text
    if strategy == "freeze":
        assert "for the training images: 1 of " in text and "for the validation images: 1 of " in text
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert "epoch 1/2: 1 of " in log_file  # kept with the run


def test_lr_find_and_advise_off_a_terminal_say_how_far_they_are(tmp_path, monkeypatch):
    from transferkit.advice.advise import advise
    from transferkit.train.lr_find import find_lr

    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    data = make_image_folder(tmp_path / "data", per_class=12, size=16)
    lines = []
    find_lr(tiny_config(data, tmp_path / "lr", cache=False), steps=10, log=lines.append)
    assert "lr-find: 1 of 10 steps (10%), " in "\n".join(lines)
    lines.clear()
    advise(tiny_config(data, tmp_path / "advice"), log=lines.append)
    text = "\n".join(lines)
    assert "probe: the training images: 1 of 1 batches (100%)" in text and "probe: the held-out images: 1 of" in text


def test_in_a_notebook_tqdm_draws_the_bar_and_no_line_is_logged(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    monkeypatch.setattr(progress_module, "PERIOD", 0.0)
    lines = []
    assert list(progress(range(6), "epoch 1/2", lines.append)) == list(range(6))
    drawn = capsys.readouterr().err
    assert lines == [] and "epoch 1/2:" in drawn and "/6 [" in drawn
    assert progress_module.in_notebook.__name__ == "<lambda>"  # the real test reads IPython's shell
    monkeypatch.undo()
    assert progress_module.in_notebook() is False  # pytest runs in no kernel

"""A corpus of hostile and broken inputs, generated here: no binary is committed.

Each case builds its input in a fresh folder, names one command line, and says what must
happen: the exit code, words the message must contain, and what must (not) exist afterwards.
Outcomes:

* ``refused``: one line on stderr saying what was wrong and what to do, exit 2, nothing written;
* ``skipped``: the bad file is left out and listed, the command goes on (exit 0);
* ``accepted``: odd but valid input, read correctly (exit 0);
* ``stopped``: training halted with an error, the last good checkpoints kept.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .conftest import FAST, World

Setup = Callable[[World, Path], list]
Check = Callable[[World, Path, str], None]


@dataclass
class Case:
    id: str
    outcome: str
    setup: Setup
    code: int
    words: tuple[str, ...] = ()
    after: Check | None = None
    needs: str | None = None  # "unshare": a private mount namespace for a small disk
    env: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(id, outcome, code, words=(), after=None, needs=None):
    def register(setup: Setup) -> Setup:
        CASES.append(Case(id, outcome, setup, code, tuple(words), after, needs))
        return setup

    return register


# ---------------------------------------------------------------- helpers


def png_bytes(size=(20, 20), value=128, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode != "RGB" else (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_with(w: World, tmp: Path, files: dict[str, bytes | Callable[[Path], None]], *, cls="cat") -> Path:
    """A copy of the world's image folder with extra files in one class folder."""
    data = w.copy(w.data, tmp, "data")
    for name, content in files.items():
        target = data / cls / name if isinstance(name, str) else Path(os.fsdecode(bytes(data / cls) + b"/" + name))
        if callable(content):
            content(target)
        else:
            target.write_bytes(content)
    return data


def train(w: World, data, out, *extra) -> list:
    # A fixed strategy: the corpus is about bad input, and auto's probe would only add its seconds to every case.
    return ["train", w.spec, "--data", data, "--out", out, *FAST, "--strategy", "full", *extra]


def listed(*words) -> Check:
    """The report of the run lists the skipped file with these words."""

    def check(w: World, tmp: Path, output: str) -> None:
        import json

        report = json.loads((tmp / "out" / "report.json").read_text())
        text = json.dumps(report["skipped_images"])
        assert report["skipped_images"] and all(word in text for word in words), text

    return check


def absent(*names) -> Check:
    def check(w: World, tmp: Path, output: str) -> None:
        for name in names:
            assert not (tmp / name).exists(), f"{name} was written"

    return check


def not_imported(w: World, tmp: Path, output: str) -> None:
    assert not w.marker().exists(), "the model file was imported"


def payload(target: Path) -> tuple:
    return (os.system, (f"touch {target}",))


class Reduce:
    """Unpickling calls ``fn(*args)``: the stand-in for any code a pickle can run."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def victim_absent(w: World, tmp: Path, output: str) -> None:
    assert not (tmp / "VICTIM").exists(), "code in the file ran"


# ---------------------------------------------------------------- code named by a run folder


@case("run-code/predict", "refused", 2, ["--trust-code", "net.py"], not_imported)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["predict", w.code_run, w.data / "cat" / "0.png"]


@case("run-code/serve", "refused", 2, ["--trust-code", "net.py"], not_imported)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["serve", w.code_run, "--port", "0"]


@case("run-code/eval", "refused", 2, ["--trust-code", "net.py"], not_imported)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["eval", w.code_run]


@case("run-code/resume", "refused", 2, ["--trust-code", "net.py"], not_imported)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["train", "--resume", w.copy(w.code_run, tmp)]


def _with_config(w: World, tmp: Path, **config) -> Path:
    run = w.copy(w.run, tmp)
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)
        state["config"].update(config)
        torch.save(state, run / name)
    return run


@case("run-code/module-os-system", "refused", 2, ["running code from", "os.py", "os:system", "--trust-code"])
def _(w, tmp):
    return ["predict", _with_config(w, tmp, model="os:system"), w.data / "cat" / "0.png"]


@case("run-code/file-elsewhere", "refused", 2, ["evil.py", "--trust-code"], absent("evil-ran"))
def _(w, tmp):
    (tmp / "evil.py").write_text(f"open({str(tmp / 'evil-ran')!r}, 'w')\ndef f(num_classes=2): pass\n")
    return ["eval", _with_config(w, tmp, model=f"{tmp / 'evil.py'}:f")]


@case("run-code/trusted", "accepted", 0, ["cat"])
def _(w, tmp):
    return ["predict", w.code_run, w.data / "cat" / "0.png", "--trust-code"]


def _changed_note(w: World, tmp: Path, output: str) -> None:
    assert "changed since the run was trained" in output


@case("run-code/file-changed", "accepted", 0, ["changed since the run was trained"])
def _(w, tmp):
    code = w.copy(w.net.parent, tmp, "code")
    run = w.copy(w.code_run, tmp)
    (code / "net.py").write_text((code / "net.py").read_text() + "\n# edited\n")
    for name in ("best.pt",):
        state = torch.load(run / name, weights_only=True)
        state["config"]["model"] = f"{code / 'net.py'}:tiny"
        state["model_code"]["spec"] = state["config"]["model"]
        torch.save(state, run / name)
    return ["predict", run, w.data / "cat" / "0.png", "--trust-code"]


# ---------------------------------------------------------------- pickles that would run code

_PICKLES = {
    "os-system-zip": lambda t: torch.save({"w": torch.zeros(2), "x": Reduce(*payload(t))}, t.parent / "ckpt.pt"),
    "os-system-bare": lambda t: (t.parent / "ckpt.pt").write_bytes(pickle.dumps({"x": Reduce(*payload(t))}, 2)),
    "os-system-proto4": lambda t: (t.parent / "ckpt.pt").write_bytes(pickle.dumps({"x": Reduce(*payload(t))}, 4)),
    "exec": lambda t: torch.save({"x": Reduce(exec, (f"open({str(t)!r}, 'w')",))}, t.parent / "ckpt.pt"),
    "eval": lambda t: torch.save({"x": Reduce(eval, (f"open({str(t)!r}, 'w')",))}, t.parent / "ckpt.pt"),
    "open": lambda t: torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "x": Reduce(open, (str(t), "w"))}, t.parent / "ckpt.pt"
    ),
    "nested-in-state-dict": lambda t: torch.save({"state_dict": {"w": Reduce(*payload(t))}}, t.parent / "ckpt.pt"),
    "subprocess": lambda t: torch.save(
        {"x": Reduce(__import__("subprocess").call, (["touch", str(t)],))}, t.parent / "ckpt.pt"
    ),
    "getattr-chain": lambda t: torch.save(
        {"x": Reduce(getattr, (Reduce(__import__, ("os",)), "system"))}, t.parent / "ckpt.pt"
    ),
}

for _name, _make in _PICKLES.items():

    @case(f"pickle/load/{_name}", "refused", 2, ["would run code", "--trust-checkpoint"], victim_absent)
    def _(w, tmp, make=_make):
        make(tmp / "VICTIM")
        return ["load", w.spec, tmp / "ckpt.pt", "--num-classes", "2"]


@case("pickle/identify", "refused", 2, ["would run code", "--trust-checkpoint"], victim_absent)
def _(w, tmp):
    _PICKLES["os-system-zip"](tmp / "VICTIM")
    return ["identify", tmp / "ckpt.pt"]


@case("pickle/eval-weights", "refused", 2, ["would run code"], victim_absent)
def _(w, tmp):
    _PICKLES["os-system-zip"](tmp / "VICTIM")
    return ["eval", tmp / "ckpt.pt", "--data", w.data]


@case("pickle/train-weights", "refused", 2, ["would run code"], victim_absent)
def _(w, tmp):
    _PICKLES["os-system-zip"](tmp / "VICTIM")
    return train(w, w.data, tmp / "out", "--weights", tmp / "ckpt.pt")


@case("pickle/run-folder-last", "refused", 2, ["would run code", "do not use this folder"], victim_absent)
def _(w, tmp):
    run = w.copy(w.run, tmp)
    state = torch.load(run / "last.pt", weights_only=True)
    state["x"] = Reduce(*payload(tmp / "VICTIM"))
    torch.save(state, run / "last.pt")
    return ["train", "--resume", run]


@case("pickle/run-folder-best", "refused", 2, ["would run code"], victim_absent)
def _(w, tmp):
    run = w.copy(w.run, tmp)
    torch.save({"x": Reduce(*payload(tmp / "VICTIM"))}, run / "best.pt")
    return ["eval", run]


# ---------------------------------------------------------------- broken checkpoints


def _broken(name: str, make: Callable[[Path], None], words):
    @case(f"checkpoint/{name}", "refused", 2, words)
    def _(w, tmp):
        make(tmp / "ckpt.pt")
        return ["load", w.spec, tmp / "ckpt.pt", "--num-classes", "2"]


for _name, _make, _words in (
    ("missing", lambda p: None, ["ckpt.pt", "does not exist"]),
    ("empty", lambda p: p.write_bytes(b""), ["empty"]),
    ("keras-h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), ["Keras/HDF5 file"]),
    ("strings", lambda p: torch.save({"a": "b"}, p), ["not a state dict"]),
):

    @case(f"identify/{_name}", "refused", 2, _words)
    def _(w, tmp, make=_make):
        make(tmp / "ckpt.pt")
        return ["identify", tmp / "ckpt.pt"]


@case("predict/weights-fit-nothing", "refused", 2, ["fits no timm or torchvision architecture", "--model"])
def _(w, tmp):
    torch.save({"x.weight": torch.zeros(3, 3)}, tmp / "ckpt.pt")
    return ["predict", tmp / "ckpt.pt", w.data / "cat" / "0.png"]


@case("eval/weights-without-data", "refused", 2, ["needs --data (DATA)"])
def _(w, tmp):
    torch.save({"x.weight": torch.zeros(3, 3)}, tmp / "ckpt.pt")
    return ["eval", tmp / "ckpt.pt"]


def _valid_zip(path: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 8)}, buffer)
    return buffer.getvalue()


_broken("empty", lambda p: p.write_bytes(b""), ["empty"])
_broken("text", lambda p: p.write_text("not weights\n"), ["neither a PyTorch checkpoint"])
_broken("random", lambda p: p.write_bytes(random.Random(0).randbytes(4096)), ["neither a PyTorch checkpoint"])
_broken("truncated-zip", lambda p: p.write_bytes(_valid_zip(p)[:300]), ["corrupt or truncated"])
_broken("truncated-pickle", lambda p: p.write_bytes(pickle.dumps({"a": 1}, 2)[:-3]), ["corrupt or truncated"])
_broken("list", lambda p: torch.save([torch.zeros(1)], p), ["holds a list, not a state dict"])
_broken("strings", lambda p: torch.save({"a": "b"}, p), ["not a state dict"])
_broken("no-tensors", lambda p: torch.save({}, p), ["holds no tensors"])
_broken("other-architecture", lambda p: torch.save({"x.weight": torch.zeros(3, 3)}, p), ["another architecture"])
_broken(
    "safetensors-bad-header",
    lambda p: p.write_bytes(struct.pack("<Q", 10) + b"{not json}"),
    ["not a valid safetensors file"],
)
_broken("directory", lambda p: p.mkdir(), ["is not a file"])


def _zip(members: dict[str, str]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            for name, text in members.items():
                archive.writestr(name, text)

    return make


_broken("keras-h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), ["Keras/HDF5 file", "PyTorch weights"])
_broken("keras-archive", _zip({"config.json": "{}", "model.weights.h5": ""}), ["Keras archive (.keras)"])
_broken("torchscript", _zip({"m/constants.pkl": "", "m/code/__torch__.py": "", "m/data.pkl": ""}), ["TorchScript"])
_broken("gzip", lambda p: p.write_bytes(__import__("gzip").compress(b"weights")), ["gzip-compressed", "gunzip"])


@case("checkpoint/onnx", "refused", 2, ["an ONNX model"])
def _(w, tmp):
    (tmp / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    return ["load", w.spec, tmp / "model.onnx"]


def _json_error(w: World, tmp: Path, output: str) -> None:
    import json

    line = next(line for line in output.splitlines() if line.startswith("{"))
    error = json.loads(line)
    assert error["exit_code"] == 2 and "Keras/HDF5" in error["error"], error


@case("checkpoint/json-error-on-stdout", "refused", 2, ["Keras/HDF5"], _json_error)
def _(w, tmp):
    (tmp / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    return ["load", w.spec, tmp / "w.h5", "--json"]


def _tiny_state(w: World, **replace) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("corpus_net", w.net)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.tiny().state_dict()
    state.update(replace)
    return state


@case("weights/nan", "refused", 2, ["NaN or infinite", "features.0.weight", "--allow-nonfinite"])
def _(w, tmp):
    state = _tiny_state(w)
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp / "nan.pt")
    return ["load", w.spec, tmp / "nan.pt"]


@case("weights/inf-in-train", "refused", 2, ["NaN or infinite", "--allow-nonfinite"], absent("out/last.pt"))
def _(w, tmp):
    state = _tiny_state(w)
    state["features.0.bias"][:] = float("inf")
    torch.save(state, tmp / "inf.pt")
    return train(w, w.data, tmp / "out", "--weights", tmp / "inf.pt")


@case("weights/nan-allowed", "accepted", 0, ["NaN or infinite values (allow_nonfinite)"])
def _(w, tmp):
    state = _tiny_state(w)
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp / "nan.pt")
    return ["load", w.spec, tmp / "nan.pt", "--allow-nonfinite"]


@case("weights/integers", "accepted", 0, ["converted between integer and floating point", "int64"])
def _(w, tmp):
    state = _tiny_state(w)
    state["fc.weight"] = torch.ones(2, 8, dtype=torch.int64)
    torch.save(state, tmp / "int.pt")
    return ["load", w.spec, tmp / "int.pt"]


@case("weights/markup-in-name", "accepted", 0, ["[bold]w[red].pt"])
def _(w, tmp):
    torch.save(_tiny_state(w), tmp / "[bold]w[red].pt")
    return ["load", w.spec, tmp / "[bold]w[red].pt"]


# ---------------------------------------------------------------- images in a folder


def _bomb(path: Path) -> None:
    """A valid PNG whose header claims 60000 x 60000 pixels."""
    raw = png_bytes((1, 1))
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]
    path.write_bytes(patched)


_BAD_IMAGES = {
    "truncated": ("bad.png", lambda p: p.write_bytes(png_bytes()[:60]), ["bad.png"]),
    "empty": ("bad.png", lambda p: p.write_bytes(b""), ["bad.png", "empty"]),
    "text-as-jpeg": ("bad.jpg", lambda p: p.write_text("hello"), ["bad.jpg"]),
    "random-bytes": ("bad.png", lambda p: p.write_bytes(random.Random(1).randbytes(999)), ["bad.png"]),
    "16-bit": ("bad.png", lambda p: Image.new("I;16", (20, 20), 300).save(p), ["bad.png", "mode"]),
    "float-tiff": ("bad.tiff", lambda p: Image.new("F", (20, 20), 0.5).save(p), ["bad.tiff", "mode"]),
    "decompression-bomb": ("bad.png", _bomb, ["bad.png", "decompression bomb"]),
    "fifo": ("bad.png", lambda p: os.mkfifo(p), ["bad.png", "not a regular file"]),
    "dangling-link": ("bad.png", lambda p: os.symlink(p.parent / "nowhere.png", p), ["bad.png", "dangling"]),
    "link-loop": ("bad.png", lambda p: os.symlink(p, p), ["bad.png", "loop"]),
    "folder-loop": ("sub", lambda p: os.symlink(p.parent, p), ["sub", "loop"]),
}

for _name, (_file, _make, _words) in _BAD_IMAGES.items():

    @case(f"images/{_name}", "skipped", 0, ["unusable"], listed(*_words))
    def _(w, tmp, file=_file, make=_make):
        return train(w, data_with(w, tmp, {file: make}), tmp / "out")


@case("images/strict-data", "refused", 2, ["--strict-data", "bad.png"], absent("out/last.pt"))
def _(w, tmp):
    return train(w, data_with(w, tmp, {"bad.png": b""}), tmp / "out", "--strict-data")


@case("images/strict-data-dangling", "refused", 2, ["--strict-data", "dangling"], absent("out/last.pt"))
def _(w, tmp):
    data = data_with(w, tmp, {"bad.png": lambda p: os.symlink(p.parent / "gone.png", p)})
    return train(w, data, tmp / "out", "--strict-data")


def _ok_image(mode: str, size=(20, 20), fmt="PNG", **save) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        img = Image.new(mode, size, 100 if mode in ("L", "P", "1") else (100,) * len(mode))
        img.save(path, format=fmt, **save)

    return make


def _exif_rotated(path: Path) -> None:
    img = Image.new("RGB", (30, 20), (100, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    img.save(path, format="JPEG", exif=exif)


_ODD_IMAGES = {
    "cmyk-jpeg": ("odd.jpg", _ok_image("CMYK", fmt="JPEG")),
    "palette-transparency": ("odd.png", _ok_image("P", transparency=0)),
    "grayscale": ("odd.png", _ok_image("L")),
    "one-bit": ("odd.png", _ok_image("1")),
    "rgba": ("odd.png", _ok_image("RGBA")),
    "one-pixel": ("odd.png", _ok_image("RGB", size=(1, 1))),
    "tall-strip": ("odd.png", _ok_image("RGB", size=(2, 900))),
    "animated-gif": (
        "odd.gif",
        lambda p: Image.new("P", (20, 20)).save(p, save_all=True, append_images=[Image.new("P", (20, 20), 3)]),
    ),
    "exif-rotated": ("odd.jpg", _exif_rotated),
    "uppercase-extension": ("ODD.PNG", _ok_image("RGB")),
    "no-extension": ("odd", _ok_image("RGB")),
    "hidden-junk": (".DS_Store", lambda p: p.write_bytes(b"\x00\x01junk")),
    "non-utf8-name": (b"\xff\xfeodd.png", _ok_image("RGB")),
}


def _nothing_skipped(w: World, tmp: Path, output: str) -> None:
    import json

    report = json.loads((tmp / "out" / "report.json").read_text())
    assert report["skipped_images"] == [], report["skipped_images"]


for _name, (_file, _make) in _ODD_IMAGES.items():

    @case(f"images/{_name}", "accepted", 0, ["best val_acc"], _nothing_skipped)
    def _(w, tmp, file=_file, make=_make):
        return train(w, data_with(w, tmp, {file: make}), tmp / "out")


@case("images/non-utf8-class", "accepted", 0, ["best val_acc"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    os.rename(data / "dog", os.fsdecode(bytes(data) + b"/d\xf6g"))  # Latin-1 name
    return train(w, data, tmp / "out")


@case("images/markup-in-name", "accepted", 0, ["[red]cat[bold].png"])
def _(w, tmp):
    w.copy(w.data / "cat" / "0.png", tmp, "[red]cat[bold].png")
    return ["predict", w.run, tmp / "[red]cat[bold].png"]


@case("images/class-all-unreadable", "refused", 2, ["fewer than two classes"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    for f in (data / "dog").iterdir():
        f.write_bytes(b"")
    return train(w, data, tmp / "out")


@case("images/empty-class-folder", "refused", 2, ["holds no usable files"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    (data / "empty").mkdir()
    return train(w, data, tmp / "out")


@case("images/one-class", "refused", 2, ["single class"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    import shutil

    shutil.rmtree(data / "dog")
    return train(w, data, tmp / "out")


@case("predict/one-bad-image", "skipped", 0, ["skipped", "bad.png"])
def _(w, tmp):
    (tmp / "bad.png").write_bytes(b"")
    return ["predict", w.run, tmp / "bad.png", w.data / "cat" / "0.png"]


@case("predict/all-bad", "refused", 2, ["None of the 2 images could be read"])
def _(w, tmp):
    (tmp / "bad.png").write_bytes(b"")
    (tmp / "bad.txt").write_text("x")
    return ["predict", w.run, tmp / "bad.png", tmp / "bad.txt"]


@case("predict/missing-file", "refused", 2, ["does not exist"])
def _(w, tmp):
    return ["predict", w.run, tmp / "missing.png"]


@case("predict/fifo", "refused", 2, ["not a regular file"])
def _(w, tmp):
    os.mkfifo(tmp / "pipe.png")
    return ["predict", w.run, tmp / "pipe.png"]


# ---------------------------------------------------------------- CSV files


def _csv(w: World, tmp: Path, text: str | bytes, *, name="data.csv") -> Path:
    """A CSV beside copies of the world's images (cat/0.png ... dog/7.png)."""
    w.copy(w.data / "cat", tmp)
    w.copy(w.data / "dog", tmp)
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _rows(header="path,label", extra: str = "", order=("path", "label")) -> str:
    lines = [header]
    for cls in ("cat", "dog"):
        for i in range(8):
            values = {"path": f"{cls}/{i}.png", "label": cls}
            lines.append(",".join(values[k] for k in order))
    return "\n".join(lines) + "\n" + extra


@case("csv/missing-file", "skipped", 0, ["unusable"], listed("missing.png", "line 18", "does not exist"))
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat/missing.png,cat\n")), tmp / "out")


@case("csv/missing-file-strict", "refused", 2, ["--strict-data", "missing.png"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat/missing.png,cat\n")), tmp / "out", "--strict-data")


@case("csv/directory-row", "skipped", 0, ["unusable"], listed("is a folder"))
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat,cat\n")), tmp / "out")


@case("csv/system-file-row", "skipped", 0, ["unusable"], listed("passwd"))
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="/etc/passwd,cat\n")), tmp / "out")


@case("csv/short-row", "refused", 2, ["line 18", "1 fields", "header has 2"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat/0.png\n")), tmp / "out")


@case("csv/unquoted-comma", "refused", 2, ["line 18", "3 fields", "quote"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat/1.png,cat, tabby\n")), tmp / "out")


@case("csv/quoted-comma", "accepted", 0, ["3 classes"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra='cat/1.png,"cat, tabby"\ncat/2.png,"cat, tabby"\n')), tmp / "out")


@case("csv/empty-label", "refused", 2, ["line 18", "empty label"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(extra="cat/1.png,\n")), tmp / "out")


@case("csv/latin-1", "refused", 2, ["not UTF-8", "line 18"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows().encode() + "cat/1.png,chat noir é\n".encode("latin-1")), tmp / "out")


@case("csv/binary", "refused", 2, ["not UTF-8"])
def _(w, tmp):
    return train(w, _csv(w, tmp, random.Random(2).randbytes(2000)), tmp / "out")


@case("csv/nul-bytes", "refused", 2, ["line 2", "NUL byte"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,label\ncat/0.png,cat\x00\n"), tmp / "out")


@case("csv/utf8-bom", "accepted", 0, ["best val_acc"])
def _(w, tmp):
    return train(w, _csv(w, tmp, b"\xef\xbb\xbf" + _rows().encode()), tmp / "out")


@case("csv/columns-reversed", "accepted", 0, ["best val_acc"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows("label,path", order=("label", "path"))), tmp / "out")


@case("csv/crlf-and-spaces", "accepted", 0, ["best val_acc"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _rows(" Path , Label ").replace("\n", "\r\n")), tmp / "out")


@case("csv/no-label-column", "refused", 2, ["needs a header with 'path' and 'label'"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,colour\ncat/0.png,red\n"), tmp / "out")


def _numbers(extra: str = "", column: str = "target") -> str:
    return f"path,{column}\n" + "".join(f"{c}/{i}.png,{i * 1.5}\n" for c in ("cat", "dog") for i in range(8)) + extra


def _tags(extra: str = "") -> str:
    rows = "".join(f"{c}/{i}.png,{c};{'odd' if i % 2 else ''}\n" for c in ("cat", "dog") for i in range(8))
    return "path,labels\n" + rows.replace(";\n", "\n") + extra


@case("csv/regression", "accepted", 0, ["best val_mae"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _numbers()), tmp / "out", "--task", "regression")


@case("csv/regression-text-target", "refused", 2, ["line 18", "'heavy', which is not a number"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _numbers("cat/1.png,heavy\n")), tmp / "out", "--task", "regression")


@case("csv/regression-nan-target", "refused", 2, ["line 18", "must be finite"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _numbers("cat/1.png,NaN\n")), tmp / "out", "--task", "regression")


@case("csv/regression-no-target-column", "refused", 2, ["no target column 'weight'"])
def _(w, tmp):
    data = _csv(w, tmp, _numbers())
    return train(w, data, tmp / "out", "--task", "regression", "--target-column", "weight")


@case("csv/multi-label", "accepted", 0, ["best val_map"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _tags()), tmp / "out", "--task", "multi-label")


@case("csv/multi-label-empty-name", "refused", 2, ["line 18", "empty label name"])
def _(w, tmp):
    return train(w, _csv(w, tmp, _tags("cat/1.png,cat;;odd\n")), tmp / "out", "--task", "multi-label")


@case("csv/multi-label-not-0-1", "refused", 2, ["'yes' in label column 'odd'"])
def _(w, tmp):
    data = _csv(w, tmp, "path,cat,odd\ncat/0.png,1,0\ncat/1.png,1,yes\n")
    return train(w, data, tmp / "out", "--task", "multi-label", "--label-columns", "cat,odd")


@case("csv/multi-label-from-folder", "refused", 2, ["comes from a CSV"])
def _(w, tmp):
    return train(w, w.data, tmp / "out", "--task", "multi-label")


@case("csv/header-only", "refused", 2, ["has no rows"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,label\n"), tmp / "out")


@case("csv/empty-file", "refused", 2, ["is empty"])
def _(w, tmp):
    return train(w, _csv(w, tmp, ""), tmp / "out")


@case("csv/one-class", "refused", 2, ["single class"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,label\ncat/0.png,cat\ncat/1.png,cat\n"), tmp / "out")


@case("csv/all-missing", "refused", 2, ["names no usable training files"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,label\nx/0.png,cat\nx/1.png,dog\n"), tmp / "out")


# ---------------------------------------------------------------- Hugging Face datasets (parquet)


def _parquet(w: World, tmp: Path, extra: list[tuple[dict, object]] = (), *, labels=("cat", "dog")) -> Path:
    """A parquet file of the world's images as the Hub stores them ({bytes, path} and a label), plus ``extra`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [({"bytes": (w.data / cls / f"{i}.png").read_bytes(), "path": None}, label)
            for cls, label in zip(("cat", "dog"), labels) for i in range(8)]  # fmt: skip
    rows += list(extra)
    image = pa.array([r[0] for r in rows], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    path = tmp / "data" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"image": image, "label": [r[1] for r in rows]}), path)
    return path


@case("hf/image-path-elsewhere", "skipped", 0, ["unusable"], listed("passwd", "outside DATA's folder"))
def _(w, tmp):
    return train(w, _parquet(w, tmp, [({"bytes": None, "path": "/etc/passwd"}, "cat")]), tmp / "out")


@case("hf/not-an-image", "skipped", 0, ["unusable"], listed("train[16]", "Cannot read image"))
def _(w, tmp):
    return train(w, _parquet(w, tmp, [({"bytes": b"MZ\x90\x00", "path": "x.png"}, "dog")]), tmp / "out")


@case("hf/numbered-labels", "refused", 2, ["holds int64, not classes", "ClassLabel"], absent("out"))
def _(w, tmp):
    return train(w, _parquet(w, tmp, labels=(0, 1)), tmp / "out")


@case("hf/no-such-column", "refused", 2, ["no column 'photo'", "--image-column", "image, label"], absent("out"))
def _(w, tmp):
    return train(w, _parquet(w, tmp), tmp / "out", "--image-column", "photo")


@case(
    "transformers/not-an-image-classifier",
    "refused",
    2,
    ["BertForSequenceClassification", "not an image classifier"],
    absent("out"),
)
def _(w, tmp):
    (tmp / "bert").mkdir()
    (tmp / "bert" / "config.json").write_text(
        '{"architectures": ["BertForSequenceClassification"], "model_type": "bert"}'
    )
    return ["train", tmp / "bert", "--data", w.data, "--out", tmp / "out", *FAST]


def _tiny_transformers(folder: Path, **config) -> Path:
    """A tiny BEiT as transformers saves one, with its image processor."""
    import transformers

    settings = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    model = transformers.BeitForImageClassification(
        transformers.BeitConfig(**{**settings, "intermediate_size": 32, "num_labels": 2, **config})
    )
    model.save_pretrained(folder)
    transformers.BeitImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@case(
    "transformers/pickle-with-code",
    "refused",
    2,
    ["pytorch_model.bin' refused", "would run code", "posix.system", "model.safetensors"],
    victim_absent,
)
def _(w, tmp):
    folder = _tiny_transformers(tmp / "net")
    (folder / "model.safetensors").unlink()
    torch.save({"weight": torch.zeros(1), "x": Reduce(*payload(tmp / "VICTIM"))}, folder / "pytorch_model.bin")
    return ["train", folder, "--data", w.data, "--out", tmp / "out", *FAST]


@case("transformers/image-size-beyond-memory", "refused", 2, ["parameters", "more than this machine's"], absent("out"))
def _(w, tmp):
    folder = _tiny_transformers(tmp / "net", use_absolute_position_embeddings=True)  # sized by image_size
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "image_size": 1_000_000}))
    return ["train", folder, "--data", w.data, "--out", tmp / "out", "--epochs", "1"]


@case("transformers/timm-wrapper", "refused", 2, ["timm model in transformers' TimmWrapper", "hf-hub:ORG/REPO"])
def _(w, tmp):
    (tmp / "net").mkdir()
    (tmp / "net" / "config.json").write_text(
        '{"architectures": ["TimmWrapperForImageClassification"], "model_type": "timm_wrapper", '
        '"architecture": "resnet18", "num_labels": 2}'
    )
    return ["train", tmp / "net", "--data", w.data, "--out", tmp / "out", *FAST]


@case("run/unknown-crop-mode", "refused", 2, ["crop_mode 'stretch' is not one of center, squash, border"])
def _(w, tmp):
    run = w.copy(w.run, tmp)
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)
        state["preprocessing"]["crop_mode"] = "stretch"
        torch.save(state, run / name)
    return ["predict", run, w.data / "cat" / "0.png"]


# ---------------------------------------------------------------- command lines

_OPTIONS = [
    ("lr-negative", ["--lr", "-1"], ["--lr must be in (0, inf)"]),
    ("lr-nan", ["--lr", "nan"], ["--lr must be a finite number"]),
    ("lr-zero", ["--lr", "0"], ["--lr must be in (0, inf)"]),
    ("lr-inf", ["--lr", "inf"], ["--lr must be a finite number"]),
    ("label-smoothing-2", ["--label-smoothing", "2"], ["--label-smoothing must be in [0, 1)"]),
    ("label-smoothing-negative", ["--label-smoothing", "-0.5"], ["--label-smoothing must be in [0, 1)"]),
    ("image-size-negative", ["--image-size", "-8"], ["--image-size must be in [8, inf)"]),
    ("image-size-zero", ["--image-size", "0"], ["--image-size must be in [8, inf)"]),
    ("image-size-one", ["--image-size", "1"], ["--image-size must be in [8, inf)"]),
    ("image-size-beyond-memory", ["--image-size", "100000"], ["needs at least", "float32 input", "--image-size"]),
    ("cache-views-negative", ["--cache-views", "-1"], ["--cache-views must be in [0, inf)"]),
    ("epochs-zero", ["--epochs", "0"], ["--epochs must be in [1, inf)"]),
    ("batch-size-zero", ["--batch-size", "0"], ["--batch-size must be in [1, inf)"]),
    ("val-fraction-one", ["--val-fraction", "1"], ["--val-fraction must be in (0, 1)"]),
    ("weight-decay-negative", ["--weight-decay", "-0.1"], ["--weight-decay must be in [0, inf)"]),
    ("device-tpu", ["--device", "tpu"], ["--device must be auto, cpu, cuda or cuda:N"]),
    ("strategy-unknown", ["--strategy", "warp"], ["--strategy must be one of"]),
    ("optimizer-unknown", ["--optimizer", "lion"], ["--optimizer must be one of"]),
    ("weights-missing", ["--weights", "/nonexistent/w.pth"], ["does not exist"]),
    ("head-without-freeze", ["--strategy", "head"], ["--unfreeze-last"]),
    ("gradual-one-epoch", ["--strategy", "gradual", "--epochs", "1"], ["--epochs must be at least 2"]),
    ("balance-unknown", ["--balance", "oversample"], ["--balance must be one of auto, none, weighted, sampler"]),
    ("monitor-unknown", ["--monitor", "f2"], ["--monitor must be one of auto, acc"]),
    ("patience-zero", ["--patience", "0"], ["--patience must be in [1, inf)"]),
    ("stop-after-zero", ["--stop-after", "0"], ["--stop-after must be at least 1", "got 0"]),
    ("mixup-negative", ["--mixup", "-0.2"], ["--mixup must be in [0, inf)"]),
    ("cutmix-nan", ["--cutmix", "nan"], ["--cutmix must be a finite number"]),
    ("mixup-weighted", ["--mixup", "0.2", "--balance", "weighted"], ["--balance cannot be weighted with mixup"]),
    ("lr-word", ["--lr", "fast"], ["--lr must be a finite number, got 'fast'"]),
    ("lr-auto-two-phases", ["--lr", "auto", "--strategy", "lp-ft", "--epochs", "4"], ["--lr auto finds one rate"]),
    ("augment-unknown", ["--augment", "heavy"], ["--augment must be one of auto, none, light"]),
]

for _name, _args, _words in _OPTIONS:

    @case(f"options/{_name}", "refused", 2, _words, absent("out"))
    def _(w, tmp, args=_args):
        # Options given last take effect: FAST's own values are overridden.
        return ["train", w.spec, "--data", w.data, "--out", tmp / "out", *FAST, *args]


def _layout(*folders: str) -> Setup:
    """DATA laid out as the world's image folder copied under each of these split names."""

    def setup(w: World, tmp: Path) -> list:
        for name in folders:
            w.copy(w.data, tmp / "data", name)  # copytree makes the parents
        return train(w, tmp / "data", tmp / "out")

    return setup


for _folders, _words in [
    (("train", "valid", "extra"), ["folder 'extra' beside 'train'", "would otherwise be ignored"]),
    (("train", "val", "dev"), ["several val folders (dev, val)"]),
    (("valid", "test"), ["has test, valid but no train folder"]),
]:
    case(f"layout/{'-'.join(_folders)}", "refused", 2, _words, absent("out"))(_layout(*_folders))

for _folders in (("train", "valid"), ("training", "validation", "test"), ("train", "dev")):
    case(f"layout/{'-'.join(_folders)}", "accepted", 0, ["splits: train from"])(_layout(*_folders))


@case("csv/split-unknown", "refused", 2, ["line 2 has split 'holdout'; use train, val or test"])
def _(w, tmp):
    return train(w, _csv(w, tmp, "path,label,split\ncat/0.png,cat,holdout\n"), tmp / "out")


@case("csv/split-val-only-class", "refused", 2, ["class 'bird' (val) has no training rows"])
def _(w, tmp):
    rows = (
        _rows("path,label,split", order=("path", "label"))
        .replace(",cat\n", ",cat,train\n")
        .replace(",dog\n", ",dog,train\n")
    )
    return train(w, _csv(w, tmp, rows + "cat/0.png,bird,val\n"), tmp / "out")


@case("eval/test-split-missing", "refused", 2, ["has no test split"])
def _(w, tmp):
    return ["eval", w.run, "--split", "test", "--no-report"]


@case("eval/split-unknown", "refused", 2, ["--split must be val or test"])
def _(w, tmp):
    return ["eval", w.run, "--split", "holdout", "--no-report"]


@case("options/data-missing", "refused", 2, ["does not exist"], absent("out"))
def _(w, tmp):
    return train(w, tmp / "nothing", tmp / "out")


@case("options/data-not-csv", "refused", 2, ["is not a .csv"], absent("out"))
def _(w, tmp):
    (tmp / "data.txt").write_text("x")
    return train(w, tmp / "data.txt", tmp / "out")


_FACTORIES = {
    "raises-on-import": ("raise RuntimeError('no GPU found')\n", ["model.py", "RuntimeError: no GPU found"]),
    "exit-on-import": ("import sys\nsys.exit(0)\n", ["model.py", "exit(0)"]),
    "syntax-error": ("def net(:\n", ["model.py", "SyntaxError"]),
    "raises-in-factory": ("def net(num_classes=2):\n    raise ValueError('bad depth')\n", ["bad depth"]),
    "exit-in-factory": ("import sys\ndef net(num_classes=2):\n    sys.exit(3)\n", ["exit(3)"]),
    "returns-none": ("def net(num_classes=2):\n    return None\n", ["returned NoneType, not a torch.nn.Module"]),
    "not-callable": ("net = 3\n", ["has no callable 'net'"]),
    "import-missing-package": ("import no_such_package_xyz\n", ["ModuleNotFoundError"]),
}

for _name, (_source, _words) in _FACTORIES.items():

    @case(f"model/{_name}", "refused", 2, _words, absent("out"))
    def _(w, tmp, source=_source):
        (tmp / "model.py").write_text(source)
        return ["train", f"{tmp / 'model.py'}:net", "--data", w.data, "--out", tmp / "out", *FAST]


@case("model/file-missing", "refused", 2, ["does not exist"])
def _(w, tmp):
    return ["inspect", f"{tmp / 'model.py'}:net"]


@case("model/unknown-timm", "refused", 2, ["Unknown model 'resnet5O'"])
def _(w, tmp):
    return ["inspect", "resnet5O"]


@case("model/module-missing", "refused", 2, ["Cannot import module"])
def _(w, tmp):
    return ["inspect", "no_such_pkg_xyz.models:net"]


_SURGERY = {
    "dunder-dict": ("fc.__dict__={}", ["names starting with '_' cannot be set"]),
    "dunder-class": ("fc.__class__=1", ["names starting with '_' cannot be set"]),
    "private": ("fc._parameters={}", ["names starting with '_' cannot be set"]),
    "meta-device": ("fc=Linear(8, 10, device='meta')", ["'device=' is not allowed"]),
    "dtype": ("fc=Linear(8, 10, dtype='float64')", ["'dtype=' is not allowed"]),
    "huge-layer": ("fc=Linear(4096000, 1000000)", ["parameters, more than"]),
    "code-in-expr": ("fc=__import__('os').system('true')", ["not a torch.nn layer"]),
    "lambda": ("fc=Linear(lambda: 1, 2)", ["is not a literal"]),
    "not-a-layer": ("fc=Tensor(3)", ["not a torch.nn layer"]),
    "bad-args": ("fc=Linear(-1, 3)", ["could not be built"]),
    "syntax": ("fc=Linear(8,", ["not valid syntax"]),
    "wrong-type-setting": ("fc.in_features='x'", ["'fc.in_features' is int (8)", "'x' is str"]),
    "method": ("fc.forward=1", ["No layer at path"]),
    "no-such-path": ("layer9.conv=Identity()", ["No layer at path 'layer9.conv'"]),
    "no-equals": ("fc", ["is not PATH=EXPR"]),
    "training-flag": ("fc.training=False", ["No layer at path"]),
}

for _name, (_assign, _words) in _SURGERY.items():

    @case(f"surgery/{_name}", "refused", 2, _words)
    def _(w, tmp, assign=_assign):
        return ["surgery", w.spec, "--set", assign]


# ---------------------------------------------------------------- run folders


def _lock(pid: int) -> Callable[[Path], None]:
    import socket

    return lambda out: (out / ".transferkit.lock").write_text(f"{pid} {socket.gethostname()}\n")


@case("runs/locked-by-live-process", "refused", 2, ["in use by another run", "process 1"], absent("out/last.pt"))
def _(w, tmp):
    (tmp / "out").mkdir()
    _lock(1)(tmp / "out")  # init: always alive
    return train(w, w.data, tmp / "out")


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _lock_gone(w: World, tmp: Path, output: str) -> None:
    assert (tmp / "out" / "last.pt").exists() and not (tmp / "out" / ".transferkit.lock").exists()


@case("runs/stale-lock", "accepted", 0, ["best val_acc"], _lock_gone)
def _(w, tmp):
    (tmp / "out").mkdir()
    _lock(_dead_pid())(tmp / "out")
    return train(w, w.data, tmp / "out")


@case("runs/garbage-lock", "accepted", 0, ["best val_acc"], _lock_gone)
def _(w, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / ".transferkit.lock").write_bytes(b"\xff\x00")
    return train(w, w.data, tmp / "out")


def _untouched(name: str, content: str) -> Check:
    def check(w: World, tmp: Path, output: str) -> None:
        assert (tmp / "out" / name).read_text() == content

    return check


@case(
    "runs/out-not-a-run",
    "refused",
    2,
    ["not empty and is not a run folder", "notes.txt", "--overwrite"],
    _untouched("notes.txt", "mine"),
)
def _(w, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return train(w, w.data, tmp / "out")


@case(
    "runs/out-has-files-named-like-a-runs",
    "refused",
    2,
    ["not empty and is not a run folder", "config.json, metrics.csv", "--overwrite"],
    _untouched("config.json", '{"lr": 0.1}'),
)
def _(w, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "config.json").write_text('{"lr": 0.1}')
    (tmp / "out" / "metrics.csv").write_text("step,loss\n")
    return train(w, w.data, tmp / "out")


@case("runs/out-not-a-run-overwrite", "accepted", 0, ["best val_acc"], _untouched("notes.txt", "mine"))
def _(w, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return train(w, w.data, tmp / "out", "--overwrite")


@case("runs/out-is-a-run", "refused", 2, ["already holds a run", "--overwrite"])
def _(w, tmp):
    w.copy(w.run, tmp, "out")
    return train(w, w.data, tmp / "out")


def _fresh_metrics(w: World, tmp: Path, output: str) -> None:
    import json

    assert json.loads((tmp / "out" / "config.json").read_text())["model"] == w.spec


@case("runs/out-is-a-run-overwrite", "accepted", 0, ["best val_acc"], _fresh_metrics)
def _(w, tmp):
    w.copy(w.run, tmp, "out")
    return train(w, w.data, tmp / "out", "--overwrite")


@case(
    "runs/compare-into-a-foreign-folder",
    "refused",
    2,
    ["holds other files (thesis.tex)"],
    _untouched("thesis.tex", "mine"),
)
def _(w, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("mine")
    return ["compare", w.spec, "--data", w.data, "--out", tmp / "out", "--strategies", "full,freeze", *FAST]


@case("runs/out-is-a-file", "refused", 2, ["is a file"])
def _(w, tmp):
    (tmp / "out").write_text("")
    return train(w, w.data, tmp / "out")


def _moved_in_place(w: World, tmp: Path, output: str) -> None:
    import json

    assert not (tmp / "gone").exists(), "the stored path was recreated"
    config = json.loads((tmp / "moved" / "config.json").read_text())
    assert config["out"] == str(tmp / "moved") and config["epochs"] == 2
    assert len((tmp / "moved" / "metrics.csv").read_text().splitlines()) == 3  # header and two epochs


@case("runs/resume-moved", "accepted", 0, ["resuming"], _moved_in_place)
def _(w, tmp):
    run = w.copy(w.run, tmp, "moved")
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)
        state["config"]["out"] = str(tmp / "gone")
        torch.save(state, run / name)
    return ["train", "--resume", run, "--epochs", "2"]


_RESUME_CHANGES = [
    ("lr", ["--lr", "0.5"], ["Cannot resume", "--lr (None in the run, 0.5 given)"]),
    ("data", ["--data", "/elsewhere"], ["Cannot resume", "--data"]),
    ("strategy", ["--strategy", "freeze"], ["Cannot resume", "--strategy ('full' in the run"]),
    ("seed", ["--seed", "4"], ["Cannot resume", "--seed (0 in the run, 4 given)"]),
    ("image-size", ["--image-size", "32"], ["Cannot resume", "--image-size (16 in the run"]),
    ("model", ["resnet18"], ["Cannot resume", "MODEL ('test_resnet' in the run"]),
    ("fewer-epochs", ["--epochs", "0"], ["--epochs must be in [1, inf)"]),
    ("out", ["--out", "/elsewhere"], ["--out cannot move it"]),
]

for _name, _args, _words in _RESUME_CHANGES:

    @case(f"resume/{_name}", "refused", 2, _words)
    def _(w, tmp, args=_args):
        run = w.copy(w.run, tmp)
        if args == ["resnet18"]:
            return ["train", "resnet18", "--resume", run]
        return ["train", "--resume", run, *args]


@case("resume/same-values", "accepted", 0, ["best val_acc"])
def _(w, tmp):
    return ["train", "--resume", w.copy(w.run, tmp), "--seed", "0", "--device", "cpu", "--epochs", "2"]


@case("resume/data-new-class", "refused", 2, ["classes of", "changed", "new classes bird"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    run = _with_config(w, tmp, data=str(data))
    w.copy(data / "cat", data, "bird")
    return ["train", "--resume", run, "--epochs", "2"]


@case("resume/data-file-changed", "refused", 2, ["images of", "changed"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    run = _with_config(w, tmp, data=str(data))
    state = torch.load(run / "last.pt", weights_only=True)
    from transferkit.data.sources import open_data

    state["data_fingerprint"] = open_data(str(data)).fingerprint()
    torch.save(state, run / "last.pt")
    (data / "cat" / "0.png").write_bytes(png_bytes(value=3))
    return ["train", "--resume", run, "--epochs", "2"]


def _no_leftovers(w: World, tmp: Path, output: str) -> None:
    assert not list((tmp / "run").glob(".*.tmp")), list((tmp / "run").glob(".*"))


@case("resume/leftover-temp-files", "accepted", 0, ["resuming"], _no_leftovers)
def _(w, tmp):
    run = w.copy(w.run, tmp)
    (run / ".last.pt.x1y2z3.tmp").write_bytes(b"\x00" * 4096)  # a write killed half-way
    (run / ".metrics.csv.abcd.tmp").write_text("epoch")
    return ["train", "--resume", run, "--epochs", "2"]


@case("resume/not-a-run-checkpoint", "refused", 2, ["not a transferkit run checkpoint"])
def _(w, tmp):
    run = w.copy(w.run, tmp)
    torch.save({"model": {}}, run / "last.pt")
    return ["train", "--resume", run]


@case("resume/truncated-checkpoint", "refused", 2, ["corrupt or truncated"])
def _(w, tmp):
    run = w.copy(w.run, tmp)
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    return ["train", "--resume", run]


@case("resume/no-run", "refused", 2, ["is not a transferkit run"])
def _(w, tmp):
    return ["train", "--resume", tmp]


def _modes(w: World, tmp: Path, output: str) -> None:
    for name in ("last.pt", "best.pt", "config.json", "report.json", "metrics.csv"):
        mode = (tmp / "out" / name).stat().st_mode & 0o777
        assert mode == 0o664, f"{name} {oct(mode)}"


@case("runs/umask-002", "accepted", 0, ["best val_acc"], _modes)
def _(w, tmp):
    return train(w, w.data, tmp / "out")


CASES[-1].env = {"umask": 0o002}


def _stopped(w: World, tmp: Path, output: str) -> None:
    import json

    run = tmp / "run"
    for name in ("best.pt", "last.pt"):
        assert (run / name).read_bytes() == (tmp / f"before-{name}").read_bytes(), f"{name} was replaced"
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


@case("training/nan-loss", "stopped", 2, ["diverged in epoch 2", "best.pt (epoch 1)", "--lr"], _stopped)
def _(w, tmp):
    code = w.copy(w.net.parent, tmp, "code")
    (code / "POISON").touch()  # from now on the model's output is NaN
    run = w.copy(w.code_run, tmp, "run")
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)
        state["config"]["model"] = f"{code / 'net.py'}:tiny"
        torch.save(state, run / name)
        w.copy(run / name, tmp, f"before-{name}")
    return ["train", "--resume", run, "--epochs", "2", "--trust-code"]


def _tampered(w: World, tmp: Path, change: Callable[[dict], None], name="best.pt") -> Path:
    run = w.copy(w.run, tmp)
    state = torch.load(run / name, weights_only=True)
    change(state)
    torch.save(state, run / name)
    return run


_DAMAGED = {
    "unknown-setting": (lambda s: s["config"].update(colour="red"), ["Unknown training settings: colour"]),
    "lr-nan": (lambda s: s["config"].update(lr=float("nan")), ["--lr must be a finite number"]),
    "model-not-a-dict": (lambda s: s.update(model=[1, 2]), ["damaged", "'model'"]),
    "weights-missing": (lambda s: s["model"].pop("fc.weight"), ["weights do not fit", "fc.weight"]),
    "weights-other-shape": (
        lambda s: s["model"].update({"fc.weight": torch.zeros(7, 3)}),
        ["weights do not fit", "size mismatch"],
    ),
    "one-class-name": (lambda s: s.update(class_names=["cat"]), ["damaged", "class_names"]),
    "class-names-not-strings": (lambda s: s.update(class_names=[1, 2]), ["damaged", "class_names"]),
    "preprocessing-missing": (lambda s: s.pop("preprocessing"), ["damaged", "'preprocessing'"]),
    "std-zero": (lambda s: s["preprocessing"].update(std=[0.0, 0.0, 0.0]), ["damaged", "standard deviation"]),
    "fast-path-forged": (lambda s: s.update(fast_path_inference={"exec": "x"}), ["damaged", "kernel choice"]),
    "epoch-a-string": (lambda s: s.update(epoch="1"), ["damaged", "'epoch'"]),
}

for _name, (_change, _words) in _DAMAGED.items():

    @case(f"run-damaged/{_name}", "refused", 2, _words)
    def _(w, tmp, change=_change):
        return ["eval", _tampered(w, tmp, change)]


@case("run-damaged/optimizer-state", "refused", 2, ["Cannot resume", "optimizer, scheduler or random state"])
def _(w, tmp):
    run = _tampered(w, tmp, lambda s: s.update(optimizer={"state": {}, "param_groups": []}), name="last.pt")
    return ["train", "--resume", run, "--epochs", "2"]


@case("run-damaged/rng-state", "refused", 2, ["Cannot resume", "random state"])
def _(w, tmp):
    run = _tampered(w, tmp, lambda s: s.update(rng={"python": 3}), name="last.pt")
    return ["train", "--resume", run, "--epochs", "2"]


@case("eval/checkpoint-path", "refused", 2, ["--checkpoint must be best or last"])
def _(w, tmp):
    return ["eval", w.run, "--checkpoint", "../../etc/passwd"]


@case("eval/unseen-class", "refused", 2, ["classes the run never saw: bird"])
def _(w, tmp):
    data = w.copy(w.data, tmp, "data")
    w.copy(data / "cat", data, "bird")
    return ["eval", w.run, "--data", data]


@case("eval/run-missing", "refused", 2, ["does not exist"])
def _(w, tmp):
    return ["eval", tmp / "nothing"]


@case("predict/folder-as-image", "refused", 2, ["is a folder, CSV or dataset", "with --out FILE"])
def _(w, tmp):
    return ["predict", w.run, w.data]


@case("load/save-into-missing-folder", "refused", 2, ["does not exist"])
def _(w, tmp):
    torch.save(_tiny_state(w), tmp / "w.pt")
    return ["load", w.spec, tmp / "w.pt", "--save", tmp / "no" / "such" / "out.safetensors"]


@case("paths/non-utf8-data-and-out", "accepted", 0, ["TensorBoard logs off", "best val_acc"])
def _(w, tmp):
    data = Path(os.fsdecode(bytes(tmp) + b"/d\xe9j\xe0"))  # Latin-1 "deja"
    w.copy(w.data, tmp, data.name)
    return train(w, data, Path(os.fsdecode(bytes(tmp) + b"/r\xfcn")))


@case("paths/non-utf8-run-missing", "refused", 2, ["r\\xfcn", "does not exist"])
def _(w, tmp):
    return ["eval", Path(os.fsdecode(bytes(tmp) + b"/r\xfcn"))]


def _full_disk(w: World, tmp: Path, output: str) -> None:
    # The small filesystem is gone with its namespace: the command listed the folder before leaving.
    listing = output.split("listing:", 1)[1].split()
    assert "config.json" in listing and "last.pt" not in listing, listing
    assert not [name for name in listing if name.endswith(".tmp")], listing


@case("runs/full-disk", "refused", 2, ["Not enough disk space", "last.pt", "free"], _full_disk, needs="unshare")
def _(w, tmp):
    # The run folder on a 160 KiB filesystem: config.json fits, the first checkpoint does not.
    (tmp / "disk").mkdir()
    (tmp / "big.py").write_text(
        "import torch.nn as nn\n"
        "def net(num_classes=2):\n"
        "    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4096),\n"
        "                         nn.Linear(4096, num_classes))\n"
    )
    return ["train", f"{tmp / 'big.py'}:net", "--data", w.data, "--out", tmp / "disk" / "out", *FAST]


# ---------------------------------------------------------------- configuration files


@case("config/missing", "refused", 2, ["Config file", "does not exist"])
def _(w, tmp):
    return ["train", "--config", tmp / "none.json", "--out", tmp / "out"]


@case("config/not-json", "refused", 2, ["is not valid JSON"])
def _(w, tmp):
    (tmp / "c.json").write_text("lr = 0.1\n")
    return ["train", "--config", tmp / "c.json", "--out", tmp / "out"]


@case("config/unknown-setting", "refused", 2, ["unknown settings: learning_rate"])
def _(w, tmp):
    (tmp / "c.json").write_text('{"model": "test_resnet", "learning_rate": 0.1}')
    return ["train", "--config", tmp / "c.json", "--data", w.data, "--out", tmp / "out"]


@case("config/bad-value", "refused", 2, ["--lr"])
def _(w, tmp):
    (tmp / "c.json").write_text('{"model": "test_resnet", "lr": -1}')
    return ["train", "--config", tmp / "c.json", "--data", w.data, "--out", tmp / "out"]


# ---------------------------------------------------------------- exports and their sidecars


def _exported(w: World, tmp: Path) -> Path:
    """A copy of a run with model.onnx and its sidecar, made by the real command once for every case."""
    from tests.hostile.conftest import run_cli

    template = w.root / "exported" / "run"
    if not template.exists():
        w.copy(w.run, template.parent)
        assert run_cli("export", template) == 0
    return w.copy(template, tmp) / "model.onnx"


@case("export/no-best-pt", "refused", 2, ["holds no best.pt"])
def _(w, tmp):
    return ["export", tmp]


@case("export/unknown-format", "refused", 2, ["Unknown export --format 'tflite'", "onnx"])
def _(w, tmp):
    return ["export", w.copy(w.run, tmp), "--format", "tflite"]


@case("export/quantize-safetensors", "refused", 2, ["for the onnx format"])
def _(w, tmp):
    return ["export", w.copy(w.run, tmp), "--format", "safetensors", "--quantize", "dynamic"]


@case("export/out-under-a-file", "refused", 2, ["is a file, not a folder"])
def _(w, tmp):
    (tmp / "a_file").write_text("")
    return ["export", w.copy(w.run, tmp), "--out", tmp / "a_file" / "missing" / "model.onnx"]


@case("export/out-is-a-folder", "refused", 2, ["is a folder", "model.onnx"])
def _(w, tmp):
    (tmp / "exports").mkdir()
    return ["export", w.copy(w.run, tmp), "--out", tmp / "exports"]


@case("export/quantize-unknown", "refused", 2, ["--quantize must be dynamic or static"])
def _(w, tmp):
    return ["export", w.copy(w.run, tmp), "--quantize", "int4"]


@case("export/code-run", "refused", 2, ["--trust-code", "net.py"], not_imported)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["export", w.copy(w.code_run, tmp)]


@case("predict/onnx-sidecar-missing", "refused", 2, ["has no sidecar", "model.onnx.json"])
def _(w, tmp):
    model = _exported(w, tmp)
    model.with_name("model.onnx.json").unlink()
    return ["predict", model, w.data / "cat" / "0.png"]


@case("predict/onnx-sidecar-edited", "refused", 2, ["changed after export"])
def _(w, tmp):
    model = _exported(w, tmp)
    side = model.with_name("model.onnx.json")
    side.write_text(side.read_text().replace('"cat"', '"dog"', 1))
    return ["predict", model, w.data / "cat" / "0.png"]


@case("eval/onnx-sidecar-not-json", "refused", 2, ["not valid JSON"])
def _(w, tmp):
    model = _exported(w, tmp)
    model.with_name("model.onnx.json").write_text("{class_names: cat")
    return ["eval", model, "--data", w.data]


@case("predict/onnx-garbage-with-matching-sidecar", "refused", 2, ["onnxruntime cannot load"])
def _(w, tmp):
    import json

    from transferkit.inference.sidecar import write_sidecar

    model = _exported(w, tmp)
    facts = json.loads(model.with_name("model.onnx.json").read_text())
    model.write_bytes(b"\x08\x07garbage" * 10)
    write_sidecar(model, facts)  # a sidecar that matches the garbage: only onnxruntime can refuse it
    return ["predict", model, w.data / "cat" / "0.png"]


@case(
    "export/timm-hub-code-model",
    "refused",
    2,
    ["timm-hub --format needs a timm model", "net.py:tiny"],
    lambda w, tmp, out: (not_imported(w, tmp, out), absent("code_run/timm-hub")(w, tmp, out)),
)
def _(w, tmp):
    w.marker().unlink(missing_ok=True)
    return ["export", w.copy(w.code_run, tmp), "--format", "timm-hub"]


@case("export/timm-hub-out-not-empty", "refused", 2, ["exists and is not an empty folder"])
def _(w, tmp):
    (tmp / "hub").mkdir()
    (tmp / "hub" / "notes.txt").write_text("mine")
    return ["export", w.copy(w.run, tmp), "--format", "timm-hub", "--out", tmp / "hub"]


@case("push/no-owner", "refused", 2, ["names no owner", "me/flowers"], absent("run/timm-hub"))
def _(w, tmp):
    return ["push", w.copy(w.run, tmp), "flowers"]


@case("push/hub-unreachable", "refused", 2, ["Could not reach the Hub", "HF_ENDPOINT"])
def _(w, tmp):
    from tests.hostile.conftest import run_cli

    run = w.copy(w.run, tmp)
    assert run_cli("export", run, "--format", "timm-hub") == 0  # the folder exists: only the upload is tried
    return ["push", run, "me/flowers"]


def counts() -> dict[str, int]:
    result: dict[str, int] = {}
    for c in CASES:
        result[c.outcome] = result.get(c.outcome, 0) + 1
    return result

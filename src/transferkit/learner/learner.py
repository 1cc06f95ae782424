"""The object ``fit`` returns: a finished run and its model, to predict with, evaluate, export and keep.

A :class:`Learner` is a thin face over the run folder (``best.pt``, ``report.json``) and the
inference code that reads it; it holds no training state of its own.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from .._table import Table
from ..data.user_data import is_given, read_dataset
from ..errors import ConfigError, RunError
from ..inference.batch import PredictionFile, predict_to_file
from ..inference.predict import Predictor, from_trained
from ..inference.runs import evaluate_classes, evaluate_run, load_trained
from ..inference.task_eval import evaluate_task
from ..inference.trained import TrainedModel
from ..model.factory import is_object_spec
from ..train.config import TrainConfig
from .display import Page, Plot, Scores
from .inputs import Predictions, as_batch

__all__ = ["Learner", "load_learner"]


class Learner:
    """A trained run: ``.model`` (its best epoch), ``.history``, ``.predict``, ``.evaluate``, ``.export``, ``.save``.

    Made by :func:`~transferkit.fit`, or by :func:`load_learner` from a run folder. ``trust_code`` lets a run
    whose MODEL is code (``file.py:factory``) import it: ``fit`` passes it for the code it just ran; a run
    folder from elsewhere runs none unless asked.
    """

    def __init__(
        self,
        run: str | Path,
        *,
        summary: dict | None = None,
        temporary=None,
        module: nn.Module | None = None,
        transform: Callable | None = None,
        trust_code: bool = False,
        device: str = "auto",
        held_out: tuple | None = None,
        val=None,
    ):
        self.run = Path(run)
        self.summary = summary if summary is not None else _read_summary(self.run)
        self.transform = transform  # what brings a new image to the tensors a Dataset of the user's gave
        self._temporary = temporary  # the TemporaryDirectory holding the run until save()
        self._trained: TrainedModel | None = None
        self._predictor: Predictor | None = None
        self._module, self._trust_code, self._device = module, trust_code, device
        self._held_out = held_out  # (images, labels, where from): a Dataset's held-out sample, for export's proof
        self._val = val  # the held-out split of a Dataset, decoded: what evaluate() scores by default
        if module is not None:  # the module trained in place: it takes best.pt's weights now
            self._load()

    def _load(self) -> TrainedModel:
        if self._trained is None:
            device = self._device
            if self._module is not None:
                param = next(self._module.parameters(), None)
                device = str(param.device) if param is not None and device == "auto" else device
            self._trained = load_trained(self.run, model=self._module, trust_code=self._trust_code, device=device)
        return self._trained

    @property
    def model(self) -> nn.Module:
        """The network with the weights of the best epoch (``best.pt``), in eval mode."""
        return self._load().model

    @property
    def config(self) -> TrainConfig:
        """The run's settings, as its ``config.json`` holds them."""
        return TrainConfig.from_dict(json.loads((self.run / "config.json").read_text()))

    @property
    def class_names(self) -> list[str]:
        return list(self._load().class_names)

    @property
    def task(self) -> str:
        return self.summary.get("task", "classification")

    @property
    def history(self) -> Table:
        """Each epoch's losses, scores, learning rate and seconds (``.to_pandas()`` for a DataFrame)."""
        rows = self.summary.get("epochs") or []
        shown = [k for k in (rows[0] if rows else {}) if k not in ("cumulative_seconds",)]
        return Table(rows, title=f"history of {self.run}", columns=shown)

    @property
    def best(self) -> dict:
        """The best epoch's number, monitored metric and scores."""
        return dict(self.summary.get("best") or {})

    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = from_trained(self._load())
        return self._predictor

    def predict(self, images, *, top_k: int = 5, transform: Callable | None = None) -> Predictions:
        """Predict for ``images``: a path, a list of paths, a folder, a PIL image, a tensor ``(C, H, W)`` or
        ``(N, C, H, W)``, an array ``(H, W[, C])``, or a list of these.

        Float tensors are the model's input as it is (normalised); PIL images, uint8 tensors and
        arrays get the run's preprocessing, or ``transform`` (default: the training Dataset's
        ``transform``) where the run trained on tensors a Dataset of yours made.
        """
        predictor = self.predictor()
        batch = as_batch(images, predictor.preprocessing, transform=transform or self.transform, given=self._given)
        if batch.paths is not None:
            rows = predictor.predict(batch.paths, top_k=top_k)
        else:
            rows = predictor.predict_tensors(batch.tensors, batch.names, top_k=top_k, normalised=batch.normalised)
        return Predictions(rows, task=self.task, probabilities=predictor.probabilities)

    def predict_to_file(
        self, data, out: str | Path, *, top_k: int = 5, resume: bool = False, workers: int | None = None
    ) -> PredictionFile:
        """Predict every image of ``data`` (a folder, recursively; a CSV of paths, with labels for the accuracy; a
        list of files; or a dataset, ``hf:NAME`` or ``builtin:NAME``) into ``out`` (``.csv``, ``.jsonl`` or
        ``.parquet``), a part at a time; ``resume`` goes on after an interruption. See
        :func:`~transferkit.inference.batch.predict_to_file`."""
        return predict_to_file(self.predictor(), data, out, top_k=top_k, resume=resume, workers=workers)

    @property
    def _given(self) -> bool:
        """True when the run trained on a Dataset's tensors as given (the user's transforms made them)."""
        return is_given(self.summary.get("preprocessing") or {"mean": [], "std": []})

    def evaluate(self, data=None, *, split: str = "val", batch_size: int | None = None, report: bool = False) -> Scores:
        """The scores ``eval`` gives (accuracy, balanced accuracy, macro-F1, per class, the confusion matrix; or the
        task's) on ``data``: a Dataset, a DataLoader, ``(images, targets)`` or DATA; default the run's own
        held-out split (``split="test"``: DATA's test folder). ``report`` writes report.html into the run."""
        if data is None and self._val is not None:  # the held-out split of a Dataset fit read
            return self._scores(self._val, "the run's held-out split", batch_size, report)
        if data is None or isinstance(data, str | Path):
            if is_object_spec(self.config.data) and data is None:
                raise ConfigError(
                    "data: this run trained on a Dataset of yours, which the run folder does not hold; "
                    "give it again: learner.evaluate(val_set).",
                    argument="data",
                )
            return Scores(
                evaluate_run(
                    self.run,
                    None if data is None else str(data),
                    split=split,
                    batch_size=batch_size,
                    report=report,
                    trust_code=self._trust_code,
                    module=self._module,
                )
            )
        trained = self._load()
        read = read_dataset(
            data, argument="data", preprocessing=trained.preprocessing, classes=trained.class_names, task=self.task
        )
        if read.given != self._given:
            raise ConfigError(
                f"data: this run trained on {'tensors as your Dataset gave them' if self._given else 'images'}, and "
                f"data gives {'tensors' if read.given else 'images'}; give data of the kind it trained on.",
                argument="data",
            )
        return self._scores(read.decoded, f"the data given ({read.description})", batch_size, report)

    def _scores(self, decoded, split: str, batch_size: int | None, report: bool) -> Scores:
        trained = self._load()
        about = {"run": str(self.run), "data": self.config.data, "split": split}
        folder = self.run if report else None
        if self.task != "classification":
            history = self.summary.get("epochs") if report else None
            result = evaluate_task(trained, decoded, spill=folder, batch_size=batch_size, about=about, report=history)
            return Scores(result)
        return Scores(evaluate_classes(trained, decoded, about=about, batch_size=batch_size, report=folder))

    def report(self, data=None, *, split: str = "val") -> Page:
        """Evaluate on ``data`` (as :meth:`evaluate`) and write ``report.html`` into the run: the scores, the
        learning curves, the confusion matrix and the images most confidently wrong. Shown inline in Jupyter."""
        return Page(self.evaluate(data, split=split, report=True)["report"])

    def plot(self) -> Plot:
        """The learning curves: losses and validation scores per epoch, the phases marked."""
        from ..inference._page import learning_curves
        from ..tasks.scores import curve_scores

        history = list(self.summary.get("epochs") or [])
        png = learning_curves(history, curve_scores(self.task))
        return Plot(png, f"learning curves of {self.run}")

    def export(self, path: str | Path, *, format: str = "onnx", data=None, **options):
        """Export ``best.pt`` to ``path`` (``onnx``, ``exported-program``, ``safetensors`` ...), proven on held-out
        images to give the model's outputs (:func:`transferkit.deploy.export.export_run`; ``options`` are its).

        ``data``: where the proof's images come from when the run's own are not at hand (a Dataset, or DATA).
        """
        from ..deploy.export import export_run
        from ..deploy.parity import PARITY_IMAGES

        held_out = self._held_out
        if data is not None and not isinstance(data, str | Path):
            read = read_dataset(data, argument="data", preprocessing=self._load().preprocessing, task=self.task)
            held_out = sample(read.decoded, PARITY_IMAGES, seed=self.config.seed, what=f"data ({read.description})")
            data = None
        if held_out is None and data is None and is_object_spec(self.config.data):
            raise ConfigError(
                "data: the export is proven on held-out images, and this run's Dataset is not at hand: "
                "give it (learner.export(path, data=val_set)).",
                argument="data",
            )
        return export_run(
            self.run,
            out=path,
            format=format,
            data=None if data is None else str(data),
            held_out=held_out,
            trust_code=self._trust_code,
            module=self._module,
            **options,
        )

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Keep the run in ``folder`` (a temporary run is removed with the Learner otherwise); returns ``folder``."""
        target = Path(folder)
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise RunError(f"'{target}' is not empty; choose a new folder or pass overwrite=True.", argument="folder")
        if target.resolve() == self.run.resolve():
            return target
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.run, target)
        self.run, self._temporary = target, None
        return target

    def __repr__(self) -> str:
        best = self.best
        scores = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
        return (
            f"Learner({self.summary.get('model')}, {self.task}, strategy {self.summary.get('strategy')}, "
            f"best epoch {best.get('epoch')}: {scores}; run {self.run})"
        )

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(repr(self))}</b></p>" + self.history._repr_html_()


def load_learner(
    run: str | Path, *, model: nn.Module | None = None, trust_code: bool = False, device: str = "auto"
) -> Learner:
    """The :class:`Learner` of a saved run folder.

    Args:
        model: a module of the run's architecture, for a run trained from Python on a module (its
            weights are put into it); others are rebuilt from the MODEL they name.
        trust_code: let a run whose MODEL is the user's code (``file.py:factory``) import it.
    """
    summary = _read_summary(Path(run))
    if model is None and is_object_spec(summary.get("model")):
        cls = summary["model"].removeprefix("object:")
        raise ConfigError(
            f"model: run '{run}' trained a module given from Python ({cls}); give a module of that architecture: "
            "load_learner(run, model=...).",
            argument="model",
        )
    return Learner(run, summary=summary, module=model, trust_code=trust_code, device=device)


def sample(decoded, count: int, *, seed: int, what: str) -> tuple:
    """Up to ``count`` of ``decoded``'s images with their labels, drawn by ``seed``, and what they are."""
    total = len(decoded.labels)
    index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values.tolist()
    images = decoded.images
    chosen = (
        images[torch.tensor(index)] if isinstance(images, torch.Tensor) else torch.stack([images[i] for i in index])
    )
    return chosen, decoded.labels[index], f"{what}: {len(index)} of {total} images, drawn by seed {seed}"


def _read_summary(run: Path) -> dict:
    path = run / "report.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"'{run}' holds no finished run (no report.json).", argument="run") from None
    except (OSError, ValueError) as e:
        raise RunError(f"'{path}' cannot be read ({e}).", argument="run") from None

"""transferkit: transfer learning for PyTorch image classifiers, every step visible and checked.

The public API, imported on first use (``import transferkit`` loads no torch until then)::

    import transferkit as tk

    model = tk.create_model("torchvision:alexnet", num_classes=10)
    report = tk.load_pretrained(model, "alexnet.pth")   # LoadReport: matched, missing, mismatched ...
    tk.freeze(model, "features")
    optimizer = tk.create_optimizer(model, "sgd", lr=0.01)
    learner = tk.fit(model, train_set, val_set, epochs=3)   # your nn.Module and Dataset; a Learner
    learner.predict(image)                                 # Predictions: classes and probabilities

Subpackages: ``weights`` (reading, matching, the registry), ``model`` (MODEL strings, freezing,
surgery, inspection), ``data`` (sources, decoding, preprocessing), ``train`` (configuration, the
loop, strategies, caching, comparisons), ``advice`` (probes, the advised strategy), ``inference`` (finished
runs, prediction, batch prediction into a file), ``deploy`` (export), ``serve`` (HTTP), ``learner`` (``fit``
from Python, the ``Learner``) and ``cli``.
"""

from ._lazy import attach
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FreezeError,
    ImageReadError,
    LayerExprError,
    LoadError,
    ModelSpecError,
    RunError,
    StorageError,
    SurgeryError,
    TransferkitError,
    WeightsError,
)

_EXPORTS = {
    # weights
    "LoadPolicy": ".weights.loading",
    "LoadReport": ".weights.report",
    "load_pretrained": ".weights.loading",
    "read_checkpoint": ".weights.checkpoint",
    "get_weights": ".weights.registry",
    "list_weights": ".weights.registry",
    "eval_transform": ".weights.preprocessing",
    "resolve_preprocessing": ".weights.preprocessing",
    # model
    "create_model": ".weights.auto",
    "freeze": ".model.freeze",
    "freeze_backbone": ".model.freeze",
    "freeze_stages": ".model.freeze",
    "unfreeze": ".model.freeze",
    "parameter_summary": ".model.freeze",
    "trainable_parameters": ".model.freeze",
    "frozen_norm_layers": ".model.freeze",
    "select_parameters": ".model.freeze",
    "Validation": ".model.surgery",
    "check_layers": ".model.surgery",
    "find_head": ".model.surgery",
    "get_module": ".model.surgery",
    "replace_head": ".model.surgery",
    "set_module": ".model.surgery",
    "validate": ".model.surgery",
    "parse_layer": ".model.layer_expr",
    "layer_table": ".model.inspection",
    "parameter_table": ".model.inspection",
    "parameter_values": ".model.inspection",
    "input_size_of": ".data.preprocess",
    # data
    "open_data": ".data.sources",
    # train
    "TrainConfig": ".train.config",
    "create_optimizer": ".train.optim",
    "plan_strategy": ".train.plan",
    "fit": ".learner.fit",
    "Learner": ".learner.learner",
    "load_learner": ".learner.learner",
    "Predictions": ".learner.inputs",
    "evaluate": ".train.phases.loop",
    "train_one_epoch": ".train.phases.loop",
    "load_run": ".train.folder.run_folder",
    "compare": ".advice.compare",
    "advise": ".advice.advise",
    # inference
    "evaluate_run": ".inference.runs",
    "load_trained": ".inference.runs",
    "Predictor": ".inference.predict",
    "load_predictor": ".inference.predict",
    "predict_to_file": ".inference.batch",
    # serving (the serve extra)
    "ServeOptions": ".serve.options",
    "create_app": ".serve.app",  # (serve.server.serve is not here: tk.serve is the subpackage)
}

__getattr__, __dir__ = attach(__name__, _EXPORTS)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FreezeError",
    "ImageReadError",
    "LayerExprError",
    "LoadError",
    "ModelSpecError",
    "RunError",
    "StorageError",
    "SurgeryError",
    "TransferkitError",
    "WeightsError",
    *_EXPORTS,
]

__version__ = "0.1.0"

"""The run folder: what a run writes and reads back.

``run_folder`` (checkpoints, metrics.csv, report.json, the run's model rebuilt), ``out_folder`` (the
folder claimed and locked, leftovers cleared), ``run_log`` (train.log), ``run_notes`` (what a run says of
itself), ``tracking`` (TensorBoard and MLflow), ``calibration`` (calibration.json) and ``model_card``
(MODEL_CARD.md).
"""

"""Fine-tuning: ``config`` (the one description of a run), ``strategies`` (phases), ``loop`` (one
epoch, evaluation), ``engine`` (``fit``), ``setup`` (data and model prepared once), ``phase_cache``
and ``feature_cache`` (frozen layers computed once), ``epochs`` (one phase's epochs),
``optim`` (optimizers and schedules), ``run_folder`` (checkpoints, metrics, reports), ``rng``,
``distributed`` and ``compare``."""

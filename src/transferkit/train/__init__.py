"""A training run, by concern.

The run's definition: ``config`` (``TrainConfig``, the one description of a run), ``strategies`` (their
phases), ``optim`` (optimizers and the schedule), ``rng``, ``resume`` (what a resumed run may change),
``plan`` (what each phase trains, without training). ``engine`` (``fit``) sets a run up over ``setup``
(data and model prepared once, with ``data_facts``) and runs its phases (:mod:`~transferkit.train.phases`),
writing the run folder (:mod:`~transferkit.train.folder`); frozen layers are computed once
(:mod:`~transferkit.train.cache`); several processes are :mod:`~transferkit.train.parallel`'s; ``lr_find``
is the learning-rate range test that ``lr auto`` runs. Kernels are :mod:`transferkit.runtime`'s, scores
:mod:`transferkit.tasks.metrics`'; experiments over runs (``compare``, ``sweep``) are in
:mod:`transferkit.advice`.
"""

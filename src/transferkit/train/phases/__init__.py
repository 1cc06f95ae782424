"""The loop and its phases: ``phase`` (what one phase trains with, built once), ``epochs`` (its epochs,
checkpoints and patience), ``loop`` (one training pass, evaluation), ``validation`` (the task's scores),
``balance`` (class imbalance), ``norm_adapt`` (BatchNorm statistics before a head phase) and ``finish``
(what a run does once its epochs are done)."""

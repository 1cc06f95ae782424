"""Pretrained weights: ``checkpoint`` reads files safely, ``loading`` matches tensors to a model
and reports what happened (``_align`` pairs differently named tensors by structure), and
``registry`` knows the installable weights and the preprocessing they expect."""

"""The frozen-prefix cache: a phase's frozen layers computed once and the rest trained on their output.

``cuts`` says where the prefix ends (three cuts on one dry run, tried in order), ``feature_cache`` the
dry run's boundary and the stored activations, ``head_cut`` timm's pre-logits, ``entry_cut`` the input of
the first block that trains, and ``phase_cache`` whether and what one phase caches.
"""

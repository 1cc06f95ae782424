"""What a run predicts: one class per image, several labels per image, or a number.

``classification`` picks one of K classes (softmax, cross-entropy). ``multi-label`` says for
each of K labels whether it applies (a sigmoid per label, binary cross-entropy); an image may
have none. ``regression`` predicts one number (mean squared error or Huber loss on targets
standardised by the training set's mean and scale). Labels come from image folders or a CSV
for classification, from a CSV for the other two (:mod:`transferkit.tasks.targets`).
"""

from __future__ import annotations

from .targets import TASKS, LabelSpec

__all__ = ["TASKS", "LabelSpec"]

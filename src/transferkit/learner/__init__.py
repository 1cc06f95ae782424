"""The Python face for a model and data of one's own: ``fit`` returning a :class:`Learner`, and ``load_learner``.

This layer sits above training, inference and export, and composes them; it trains nothing itself.
"""

from .fit import fit
from .inputs import Predictions
from .learner import Learner, load_learner

__all__ = ["Learner", "Predictions", "fit", "load_learner"]

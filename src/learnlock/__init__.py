"""learnlock: conditional data learnability (ungeneralizable examples), attacks and certification.

Data flow: dataset -> protection -> published dataset -> scenario -> report.
"""

from .data import ImageDataset, list_datasets, load_dataset
from .errors import LearnlockError
from .recipe import RECIPES, Recipe
from .scenarios.evaluation import evaluate_nets, results_table
from .models import NetSpec, create_model, list_models
from .keys import Key, load_key  # also registers the "keyed" model
from .provenance import version as _version
from .losses import DistillationLoss
from .callbacks import Trajectory
from .training import Callback, evaluate, fit

__version__ = _version()

__all__ = [
    "ImageDataset", "load_dataset", "list_datasets", "LearnlockError", "evaluate_nets",
    "results_table", "NetSpec", "Key", "load_key", "create_model", "list_models", "RECIPES", "Callback",
    "DistillationLoss", "Recipe", "Trajectory", "evaluate", "fit", "__version__",
]

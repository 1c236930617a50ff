"""Training recipes and safe checkpoints for the zoo models (``edgeseq train``)."""

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .loop import TrainConfig, evaluate, fit, predict
from .recipes import RECIPES, TASKS, recipe, train_task

__all__ = [
    "RECIPES",
    "TASKS",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "read_checkpoint",
    "recipe",
    "save_checkpoint",
    "train_task",
]

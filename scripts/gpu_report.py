#!/usr/bin/env python3
"""What one short GPU slot should tell us, measured within a time budget that leaves room for a rerun.

On the GPU machine (one H100/H200, no network; wheels in .whl/, fetched as docs/performance.md says), from
the repository root, as ONE command (it stops by itself inside --budget-s, 560 s by default: with the
15-minute slot's start-up that leaves about a third of the slot for one rerun, which can pass a
smaller --budget-s; every section's cap shrinks with it):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; python3 scripts/gpu_report.py --out "$OUT"

Check the script itself on a CPU (tiny sizes, gloo instead of NCCL; 2-3 minutes on 2 busy cores):

    python3 scripts/gpu_report.py --quick --out /tmp/gpu-report

Sections, in priority order, each with its own time cap (a section that reaches its cap is
stopped and recorded as "stopped at cap", with what it measured so far; the caps add up to the
budget less the start-up and the final write):

0. environment: torch / transformers / optimizer package versions, the GPU, its memory and
   bf16 peak (training/records.environment, training/throughput.peak_tflops); a second or two;
1. train.py itself under FSDP with MoLS, a checkpoint and a resume: `torchrun --standalone
   --nproc_per_node 1 train.py` (an NCCL group of one, so MoLS shards its statistics and every
   collective meets NCCL's rule that it takes CUDA tensors only) on the paper's configs at
   llama_60m (short sequences, few steps), MoLS calibrating at step 2, a checkpoint every 2
   steps, then a second launch with run.resume=auto that continues to more steps: exit codes,
   the calibration table, the checkpoints, and the peak memory against the dry run's estimate
   (training.dry_run.device_memory) for the same config;
2. the tests marked cuda (pytest -m cuda tests/test_cuda.py, one subprocess): outcome and time of
   each test;
3. throughput of llama_60m/130m/350m/1b in the paper's precision (base.yaml: bf16-pure; AdamW,
   micro-batch from the config, seq 256): tokens/s, MFU, peak memory (reset before each) beside
   the dry run's estimate for the same config, eager for every size; one end-to-end train.py run
   (llama_60m, token shards of the real text) to check the in-process figure against the real
   loop; then torch.compile for as many sizes as the cap allows;
4. MoLS calibration cost (statistics on the CPU, as the paper) against the step time, at
   llama_130m and llama_1b, and projected to the paper's 16,384 sequences;
5. llama_7b with the Table 3 setup (8-bit Adam, gradient checkpointing, bf16-pure): a few steps,
   step time and peak memory against the estimate;
6. correctness on real text, if time is left (tests/assets: Wikipedia lead sections, the 2k
   byte-level BPE): per-tensor gradient cosine bf16-mixed vs fp32 on one batch (llama_60m
   shape, 2k vocabulary); RoPE's inv_freq stays fp32 under bf16-pure; a bf16-mixed vs fp32 loss
   curve; MoLS module SNRs with statistics on the CPU vs on the GPU from the same gradients; a
   few steps of adamw, adam8bit, galore, apollo, muon and adam_mini on the device, then one MoLS
   calibration and step on each (section 2's tests check the same at smaller sizes).

Sections 1 and 2 and the end-to-end run are subprocesses (each killed with everything it started
when its section reaches its cap); the rest runs in this process. Nothing is left on disk but
OUT/gpu_report.json (every figure; rewritten after each section, so a killed run still leaves what
it measured) and OUT/gpu_report.md (the printed summary): run directories, checkpoints and token
shards go to a temporary directory removed at the end (train.py's final checkpoint, 0.7 GB at
llama_60m, is deleted right after its figures are read). On the paper sizes the model's
vocabulary is 32,000 (the text's ids stay below 2,000: throughput does not depend on them); the
loss comparisons use models with the tokenizer's own 2,000-row vocabulary, so chance is
ln(2000) = 7.6.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the budget counts the imports too
ROOT = Path(__file__).resolve().parents[1]
try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

import os  # noqa: E402

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                     ("WANDB_MODE", "disabled"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import faulthandler  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import xml.etree.ElementTree as ElementTree  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import train  # noqa: E402  (take_update and forward_backward: train.py's own update)
from data import get_tokenizer  # noqa: E402
from configs import write_json_atomic, write_text_atomic  # noqa: E402
from data.embedded import read_texts  # noqa: E402
from data.sequences import Document, build_sequences  # noqa: E402
from data.stream import collate  # noqa: E402
from data.tokenizer import DocumentEncoder  # noqa: E402
from models import mean_loss  # noqa: E402
from mols import MoLS, GradientMoments, classify, measure_module_snr, param_groups  # noqa: E402
from optimizers import build_optimizer, optimizer_state_bytes  # noqa: E402
from optimizers.schedule import lr_factor  # noqa: E402
from training.faults import StopRequests  # noqa: E402
from training.config import Config, load_config  # noqa: E402
from training.evaluation import evaluate, to_device  # noqa: E402
from training.dry_run import build_meta_model, device_memory  # noqa: E402
from training.precision import prepare_model, resolve_precision  # noqa: E402
from training.records import environment, read_metrics  # noqa: E402
from models.cost import flops_per_token  # noqa: E402
from training.throughput import peak_tflops  # noqa: E402

PAPER = ROOT / "configs" / "paper"
ASSETS = ROOT / "tests" / "assets"
TOKENIZER = str(ASSETS / "tokenizer")
GIB = 2**30
OPTIMIZERS = ("adamw", "adam8bit", "galore", "apollo", "muon", "adam_mini")
METHOD_FILE = {"adamw": "adam"}  # method -> its overlay in configs/paper/methods (when named otherwise)


# ------------------------------------------------------------------------------------------------
# Real text, configs, models and steps: the pieces tests/test_cuda.py shares
# ------------------------------------------------------------------------------------------------

def text_batches(tokenizer, split: str = "train", *, batch_size: int, seq_len: int, count: int,
                 vocab_limit: int | None = None, seed: int | None = 0) -> list[dict]:
    """`count` micro-batches of packed real text from tests/assets/<split>.jsonl, with the data
    pipeline's own encoder, sequence packing and collation ({"input_ids", "labels"}, CPU tensors).
    Documents in a seeded order per epoch (`seed=None`: file order, one epoch at most)."""
    encoder = DocumentEncoder(tokenizer, vocab_limit)
    ids = encoder.encode(list(read_texts(ASSETS / f"{split}.jsonl")))

    def documents():
        for epoch in itertools.count() if seed is not None else [0]:
            order = (np.random.default_rng([seed, epoch]).permutation(len(ids)) if seed is not None
                     else np.arange(len(ids)))
            for i, j in enumerate(order):
                yield Document(epoch, i, ids[j])

    sequences = build_sequences(documents(), seq_len=seq_len, packing=True, eos_id=encoder.eos_id,
                                pad_id=encoder.pad_id)
    batches = []
    for _ in range(count):
        group = list(itertools.islice(sequences, batch_size))
        if len(group) < batch_size:
            break
        batches.append(collate(group, encoder))
    return batches


def paper_layers(size: str, method: str = "adamw", mols: bool = False) -> list[Path]:
    """The config files of a paper cell: base.yaml + models/<size> + methods/<method> [+ mols.yaml]
    (a size or method without its own overlay has none)."""
    paths = [PAPER / "base.yaml"]
    if (PAPER / "models" / f"{size}.yaml").is_file():
        paths.append(PAPER / "models" / f"{size}.yaml")
    method_file = PAPER / "methods" / f"{METHOD_FILE.get(method, method)}.yaml"
    if method_file.is_file():
        paths.append(method_file)
    if mols:
        paths.append(PAPER / "mols.yaml")
    return paths


def paper_overrides(size: str, method: str = "adamw", *, device: torch.device, precision: str | None = "auto",
                    overrides: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The settings that point a paper cell at the test assets, on `device`, writing no checkpoint
    (before `overrides`); `precision=None` keeps the paper's (base.yaml: bf16-pure)."""
    return [f"model.size={size}", f"optimizer.name={method}", f"train.device={device.type}",
            *([f"train.precision={precision}"] if precision is not None else []),
            "train.checkpoint_every=0", "run.wandb.mode=disabled",
            "data.source=local", f"data.path={ASSETS / 'train.jsonl'}", f"data.val_path={ASSETS / 'val.jsonl'}",
            f"data.tokenizer={TOKENIZER}", "data.packing=true", *overrides]


def paper_config(size: str, method: str = "adamw", *, device: torch.device, precision: str | None = "auto",
                 overrides: tuple[str, ...] | list[str] = (), mols: bool = False) -> Config:
    """A run config composed as the paper's cells are (base.yaml + models/<size> + methods/<method>
    [+ mols.yaml]), pointed at the test assets, with nothing written anywhere (`precision=None`:
    the paper's, bf16-pure)."""
    return load_config(paper_layers(size, method, mols),
                       paper_overrides(size, method, device=device, precision=precision, overrides=overrides))


def paper_arguments(size: str, method: str = "adamw", *, device: torch.device, precision: str | None = "auto",
                    overrides: tuple[str, ...] | list[str] = (), mols: bool = False) -> list[str]:
    """train.py's command-line arguments for exactly `paper_config(...)`'s config."""
    arguments = []
    for path in paper_layers(size, method, mols):
        arguments += ["--config", str(path)]
    for item in paper_overrides(size, method, device=device, precision=precision, overrides=overrides):
        arguments += ["--set", item]
    return arguments


def memory_estimate(cfg: Config, tokenizer_size: int, device: torch.device, world_size: int = 1) -> dict:
    """The dry run's per-device memory estimate for `cfg` on `device` (training.dry_run.device_memory,
    what train.py's memory check adds up): its total and its parts, in GiB."""
    precision = resolve_precision(cfg.train.precision, device)
    parts = device_memory(cfg, build_meta_model(cfg, cfg.model.vocabulary(tokenizer_size)), precision, world_size,
                          device)
    return {"estimate_gib": sum(parts.values()) / GIB, "estimate_parts_gib": {k: v / GIB for k, v in parts.items()}}


def prepare(cfg: Config, tokenizer_size: int, device: torch.device):
    """training.precision.prepare_model (model, precision, autocast factory) on `device`, with the
    vocabulary train.py gives it (cfg.model.vocabulary: 32,000 for the paper's LLaMA sizes), in
    training mode."""
    model, precision, autocast = prepare_model(cfg, cfg.model.vocabulary(tokenizer_size), device)
    model.train()
    return model, precision, autocast


NO_SIGNALS = StopRequests(signals=())  # the report installs no signal handlers: its watchdog ends it


def train_step(model, optimizer, micro_batches: list[dict], device: torch.device, autocast, *,
               lr_factor: float = 1.0, grad_clip: float = 1.0, train_model=None):
    """One update exactly as train.py's loop takes it (train.take_update: learning rate, forward and
    backward, gradient norm, the step's one host sync, clipping, step, zero_grad). Returns the mean
    loss and the norm as device tensors."""
    stepped = model if train_model is None else train_model
    update = train.take_update(model, stepped, optimizer, micro_batches, lr_factor=lr_factor, grad_clip=grad_clip,
                               world_size=1, device=device, autocast=autocast, stops=NO_SIGNALS)
    if update.nonfinite:  # no step was taken; the caller sees the non-finite loss
        optimizer.zero_grad(set_to_none=True)
    return update.loss_total / update.targets, update.grad_norm


def gradients(model, batch: dict, device: torch.device, autocast) -> dict[str, torch.Tensor]:
    """fp32 copies of the parameter gradients of one batch's token-mean loss (train.py's
    forward_backward), the model's gradients left empty."""
    model.zero_grad(set_to_none=True)
    train.forward_backward(model, [batch], 1, device, autocast)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def gradient_agreement(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per tensor: cosine of the two gradients and |other - reference| / |reference| (tensors
    whose reference gradient is exactly zero are left out)."""
    out = {}
    for name, ref in reference.items():
        ref_norm = float(ref.norm())
        if ref_norm == 0.0:
            continue
        got = other[name]
        cosine = float(torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0, eps=1e-30))
        out[name] = {"cosine": cosine, "relative_difference": float((got - ref).norm()) / ref_norm}
    return out


def snr_on_cpu_and_device(model, batches: list[dict], segments, device: torch.device, autocast) -> tuple[dict, dict]:
    """Module SNRs from the same gradient samples with the statistics (mols.snr.GradientMoments)
    kept on the CPU and on `device`: ({class: snr} on the CPU, {class: snr} on the device).
    Both fold in the very same gradients, so any difference is the statistics' own."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    on_cpu, on_device = GradientMoments(params, "cpu"), GradientMoments(params, device)
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with autocast():
            mean_loss(model, to_device(batch, device)).backward()
        on_cpu.add_current_grads()
        on_device.add_current_grads()
    model.zero_grad(set_to_none=True)
    return on_cpu.module_snr(segments), on_device.module_snr(segments)


def relative_differences(reference: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    return {k: abs(other[k] - v) / abs(v) if v else abs(other[k]) for k, v in reference.items()}


def loss_curve(cfg: Config, tokenizer_size: int, device: torch.device, batches: list[dict], steps: int,
               val_batches: list[dict], warmup: int = 5) -> dict:
    """Train a fresh model (cfg.run.seed) for `steps` updates of one micro-batch each, cycling
    `batches`: the training loss per step and the validation loss before and after."""
    model, precision, autocast = prepare(cfg, tokenizer_size, device)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    val_before, _ = evaluate(model, val_batches, device, autocast)
    losses = []
    for step in range(steps):
        factor = lr_factor(step, total_steps=steps, warmup_steps=warmup, min_ratio=0.1)
        loss, _ = train_step(model, optimizer, [batches[step % len(batches)]], device, autocast,
                             lr_factor=factor, grad_clip=cfg.train.grad_clip)
        losses.append(float(loss))
    val_after, _ = evaluate(model, val_batches, device, autocast)
    return {"precision": precision, "train_loss": losses, "val_loss_before": val_before, "val_loss_after": val_after}


# ------------------------------------------------------------------------------------------------
# Subprocesses: train.py under torchrun, pytest
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Launch:
    """How a subprocess ended: its exit code (None when it was killed at its time limit), output
    and seconds."""
    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr.strip().splitlines()[-lines:])[-3000:]


def _descendants(pid: int) -> list[int]:
    """Every process started by `pid`, directly or not (from /proc: torchrun starts each worker in
    a session of its own, so its process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_command(command: list[str], timeout: float) -> Launch:
    """Run `command` from the repository root for at most `timeout` seconds. At the limit the
    command and every process it started are killed (so no worker keeps the GPU; exit code None);
    on an exception meanwhile (a section reaching its cap) too, and the exception goes on."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=max(1.0, timeout))
        code = process.returncode
    except BaseException as failure:
        for pid in [*reversed(_descendants(process.pid)), process.pid]:  # found before any of them dies
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a pipe held open by something that escaped the kill
            out, err = "", ""
        if not isinstance(failure, subprocess.TimeoutExpired):
            raise
        code = None
    return Launch(command, code, out or "", err or "", round(time.perf_counter() - started, 1))


# ------------------------------------------------------------------------------------------------
# train.py under FSDP with MoLS, a checkpoint and a resume (section 1; tests/test_cuda.py too)
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FsdpMolsRun:
    """One process under torchrun, train.parallel=fsdp, MoLS calibrating at `estimate_at`, a
    checkpoint every `checkpoint_every` steps; `steps` in the first launch, `resumed_steps` after
    run.resume=auto."""
    size: str
    seq_len: int
    micro_batch: int
    global_batch: int   # > micro_batch: FSDP's accumulation runs too
    samples: int        # mols.samples: sequences of the calibration
    steps: int = 4
    resumed_steps: int = 6
    estimate_at: int = 2
    checkpoint_every: int = 2
    warmup_steps: int = 4  # the estimate must fall inside the warm-up (training/config.py)

    def overrides(self, out_dir: Path, steps: int) -> list[str]:
        return ["train.parallel=fsdp", f"train.steps={steps}", f"train.warmup_steps={self.warmup_steps}",
                f"train.micro_batch={self.micro_batch}", f"train.global_batch={self.global_batch}",
                f"train.checkpoint_every={self.checkpoint_every}", "train.log_every=1", "train.eval_every=1000000",
                f"data.seq_len={self.seq_len}", "data.val_tokens=4096", "data.num_workers=0",
                f"mols.estimate_at={self.estimate_at}", f"mols.samples={self.samples}", "optimizer.lr=1e-3",
                f"run.out_dir={out_dir}", "run.name=fsdp_mols"]

    def config(self, device: torch.device, out_dir: Path) -> Config:
        return paper_config(self.size, device=device, precision=None, overrides=self.overrides(out_dir, self.steps),
                            mols=True)

    def command(self, device: torch.device, out_dir: Path, resume: bool = False) -> list[str]:
        overrides = self.overrides(out_dir, self.resumed_steps if resume else self.steps)
        if resume:  # more steps than the checkpoint's run: a change, allowed
            overrides += ["run.resume=auto", "run.allow_resume_changes=true"]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                str(ROOT / "train.py"),
                *paper_arguments(self.size, device=device, precision=None, overrides=overrides, mols=True)]


def calibration_table(stdout: str) -> list[str]:
    """The calibration table train.py prints (its first line and the indented lines under it)."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("MoLS calibration at step") and "gradient samples" in line:
            table = [line]
            for following in lines[i + 1:]:
                if not following.startswith("  "):
                    break
                table.append(following)
            return table
    return []


def fsdp_mols_train(run: FsdpMolsRun, device: torch.device, workdir: Path, figures: dict,
                    deadline: float) -> list[str]:
    """Both launches of `run`, each given until `deadline`; `figures` filled as they end (exit codes,
    seconds, stderr on failure, the calibration, checkpoints, steps, peak memory against the dry
    run's estimate). Returns what went wrong (empty: calibrated, checkpointed, resumed, finished)."""
    run_dir = workdir / "fsdp_mols"
    shutil.rmtree(run_dir, ignore_errors=True)
    problems = []
    figures.update({"size": run.size, "seq_len": run.seq_len, "micro_batch": run.micro_batch,
                    "global_batch": run.global_batch, "mols_samples": run.samples, "estimate_at": run.estimate_at,
                    "checkpoint_every": run.checkpoint_every,
                    "backend": "nccl" if device.type == "cuda" else "gloo"})
    cfg = run.config(device, workdir)
    figures["precision"] = resolve_precision(cfg.train.precision, device)
    figures.update(memory_estimate(cfg, len(get_tokenizer(TOKENIZER)), device))
    for key, resume in (("first", False), ("resumed", True)):
        command = run.command(device, workdir, resume)
        launch = run_command(command, deadline - time.monotonic() - 1)
        entry = figures[key] = {"command": " ".join(command[1:]), "exit_code": launch.returncode,
                                "seconds": launch.seconds, "steps": run.resumed_steps if resume else run.steps}
        metrics = read_metrics(run_dir / "metrics.jsonl")
        trained = [r for r in metrics if r["kind"] == "train"]
        entry["last_step"] = max((r["step"] for r in trained), default=0)
        entry["max_mem_alloc_gib"] = max((r["mem_alloc_gib"] for r in trained if "mem_alloc_gib" in r), default=None)
        if (run_dir / "checkpoints").is_dir():
            entry["checkpoints"] = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
            entry["peak_memory_gib"] = summary.get("peak_memory_gib")
            entry["final_val_loss"] = summary.get("final_val_loss")
        if resume:
            entry["resumed_from"] = next((line.split("(resuming from ", 1)[1].rstrip(")") for line in
                                          launch.stdout.splitlines() if "(resuming from " in line), None)
        else:
            table = calibration_table(launch.stdout)
            calibrations = [r for r in metrics if r["kind"] == "mols_calibration"]
            if calibrations:
                c = calibrations[-1]
                figures["calibration"] = {"step": c["step"], "table": table, **{
                    k: c.get(k) for k in ("gradient_samples", "sequences", "seconds", "module_snr", "alphas",
                                          "statistics_bytes")}}
        if launch.returncode != 0:
            entry["stderr_tail"] = launch.stderr_tail()
            entry["stdout_tail"] = "\n".join(launch.stdout.strip().splitlines()[-10:])
            problems.append(f"the {key} launch " + ("was stopped at the section's cap" if launch.timed_out else
                                                     f"exited with {launch.returncode}: "
                                                     f"{(launch.stderr.strip().splitlines() or [''])[-1][:300]}"))
            break
        if entry["last_step"] != entry["steps"]:
            problems.append(f"the {key} launch logged step {entry['last_step']}, not {entry['steps']}")
    else:
        calibration = figures.get("calibration")
        if not calibration or calibration["step"] != run.estimate_at or not calibration.get("table"):
            problems.append(f"no MoLS calibration at step {run.estimate_at} (record and printed table)")
        elif not (calibration["gradient_samples"] or 0) >= 2 or \
                not all(math.isfinite(a) and a > 0 for a in calibration["alphas"].values()):
            problems.append(f"the calibration's samples or alphas are wrong: {calibration}")
        names = [f"step_{s:07d}" for s in range(run.checkpoint_every, run.steps + 1, run.checkpoint_every)]
        saved = figures["first"].get("checkpoints", [])
        if not all(any(n.startswith(name) for n in saved) for name in names):
            problems.append(f"checkpoints after the first launch: {saved}, expected {names}")
        if not (figures["resumed"].get("resumed_from") or "").startswith(f"step_{run.steps:07d}"):
            problems.append(f"the second launch resumed from {figures['resumed'].get('resumed_from')}, "
                            f"not step {run.steps}")
    measured = [figures[key]["peak_memory_gib"] for key in ("first", "resumed")
                if figures.get(key, {}).get("peak_memory_gib")]  # CUDA only
    if measured:
        figures["peak_memory_gib"] = max(measured)
        figures["peak_over_estimate"] = figures["peak_memory_gib"] / figures["estimate_gib"]
    shutil.rmtree(run_dir, ignore_errors=True)  # its checkpoints
    return problems


# ------------------------------------------------------------------------------------------------
# The report: sections with time caps, figures as JSON after each
# ------------------------------------------------------------------------------------------------

class SectionTimeout(BaseException):
    """Raised by SIGALRM when a section reaches its cap (BaseException: no `except Exception`
    on the way swallows it)."""


def _alarm(signum, frame):
    raise SectionTimeout()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_text(err: BaseException) -> str:
    lines = traceback.format_exception_only(type(err), err)
    return (lines[-1] if lines else repr(err)).strip()[:500]


@dataclasses.dataclass
class Plan:
    """What a run measures: the full report, or --quick's tiny version of every step."""
    fsdp: FsdpMolsRun
    curve_size: str
    curve_steps: int
    curve_batch: int
    curve_seq: int
    curve_lr: float
    snr_samples: int
    optimizer_steps: int
    speed_sizes: tuple
    speed_micro_batch: int | None  # None: the paper config's
    speed_seq: int
    measure_s: float
    max_steps: int
    warmup_steps: int
    e2e_size: str
    e2e_steps: int
    e2e_cap_s: float       # the train.py run's own limit inside the throughput section
    compile_min_s: float   # a torch.compile measurement starts only with this much of the section left
    seven_size: str
    seven_micro_batch: int
    seven_seq: int
    seven_steps: int
    mols_sizes: tuple
    mols_samples: int
    caps: dict             # seconds per section, in the order they run

    @property
    def budget_s(self) -> float:
        """The default --budget-s: the start-up, every section's cap, and the final write."""
        return START_UP_S + sum(self.caps.values()) + END_RESERVE_S


START_UP_S = 14.0    # python, torch, transformers and the project imported, before the first section
END_RESERVE_S = 8.0  # seconds kept for writing, cleaning up and exiting


FULL = Plan(fsdp=FsdpMolsRun("llama_60m", seq_len=128, micro_batch=8, global_batch=16, samples=64),
            curve_size="llama_60m", curve_steps=50, curve_batch=16, curve_seq=128, curve_lr=1e-3, snr_samples=16,
            optimizer_steps=3,
            speed_sizes=("llama_60m", "llama_130m", "llama_350m", "llama_1b"), speed_micro_batch=None, speed_seq=256,
            measure_s=5.0, max_steps=300, warmup_steps=3, e2e_size="llama_60m", e2e_steps=60,
            e2e_cap_s=60, compile_min_s=40,
            seven_size="llama_7b", seven_micro_batch=8, seven_seq=256, seven_steps=5,
            mols_sizes=("llama_130m", "llama_1b"), mols_samples=8,
            # 538 s of sections: a budget of 560 s (a third of the 15-minute slot left for a rerun)
            caps={"environment": 8, "fsdp_train": 80, "cuda_tests": 150, "throughput": 140, "mols_cost": 45,
                  "llama_7b": 80, "correctness": 35})
QUICK = Plan(fsdp=FsdpMolsRun("llama_micro", seq_len=32, micro_batch=4, global_batch=8, samples=16),
             curve_size="llama_micro", curve_steps=25, curve_batch=8, curve_seq=64, curve_lr=1e-2, snr_samples=4,
             optimizer_steps=2,
             speed_sizes=("llama_micro", "llama_tiny"), speed_micro_batch=8, speed_seq=64,
             measure_s=1.0, max_steps=50, warmup_steps=1, e2e_size="llama_micro", e2e_steps=8,
             e2e_cap_s=30, compile_min_s=20,
             seven_size="llama_micro", seven_micro_batch=4, seven_seq=64, seven_steps=2,
             mols_sizes=("llama_micro",), mols_samples=4,
             # 250 s of sections on a CPU (bf16-pure, the paper's precision, is slow there), most of them
             # ending early: the whole run took 150 s on 2 busy cores
             caps={"environment": 5, "fsdp_train": 75, "cuda_tests": 25, "throughput": 35, "mols_cost": 20,
                   "llama_7b": 15, "correctness": 75})


class Report:
    """The figures of every section in one JSON (rewritten after each), and a printed summary."""

    END_RESERVE = END_RESERVE_S

    def __init__(self, out: Path, budget_s: float, device: torch.device, plan: Plan, compile_: bool, quick: bool,
                 argv: list[str]):
        self.out, self.budget_s, self.device, self.plan, self.compile = out, budget_s, device, plan, compile_
        self.started = STARTED
        self.data = {"report": {"command": "python3 scripts/gpu_report.py " + " ".join(argv), "quick": quick,
                                "device": str(device), "budget_s": budget_s,
                                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                     "sections": {}, "checks": {}}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed() - self.END_RESERVE

    def write(self) -> None:
        self.data["report"]["elapsed_s"] = round(self.elapsed(), 1)
        write_json_atomic(self.out / "gpu_report.json", self.data)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.data["checks"][name] = {"passed": bool(passed), "detail": detail}

    def section(self, key: str, title: str, run) -> None:
        """Run `run(figures, notes, deadline)` with at most the plan's cap for `key` (less when the
        budget has less left): stopped by SIGALRM at the cap, the figures gathered so far kept."""
        cap_s = self.plan.caps[key]
        allowance = min(cap_s, self.remaining())
        record = {"title": title, "status": "running", "cap_s": round(allowance, 1), "figures": {}, "notes": []}
        self.data["sections"][key] = record
        if allowance < min(3.0, cap_s) or allowance <= 0:
            record["status"] = "skipped: no time left in the budget"
            self.write()
            print(f"== {title}: skipped (no time left)", flush=True)
            return
        self.write()
        print(f"== {title} (cap {allowance:.0f} s)", flush=True)
        started = time.monotonic()
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, allowance)
        try:
            run(record["figures"], record["notes"], started + allowance)
            record["status"] = "ok"
        except SectionTimeout:
            record["status"] = "stopped at cap"
        except Exception as err:  # a broken section must not cost the others
            record["status"] = "failed"
            record["error"] = error_text(err)
            record["traceback"] = traceback.format_exc()[-3000:]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        record["seconds"] = round(time.monotonic() - started, 1)
        free_memory(self.device)
        self.write()
        print(f"   {record['status']} after {record['seconds']} s"
              + (f": {record['error']}" if "error" in record else ""), flush=True)


def attempt(figures: dict, key: str, run) -> None:
    """One item of a section (a size, an optimizer): its error is recorded, the section goes on
    (a SectionTimeout still ends the section)."""
    entry = figures.setdefault(key, {})
    try:
        run(entry)
        entry.setdefault("status", "ok")
    except torch.cuda.OutOfMemoryError as err:
        entry["status"] = "out of memory"
        entry["error"] = error_text(err)
    except Exception as err:
        entry["status"] = "failed"
        entry["error"] = error_text(err)
        entry["traceback"] = traceback.format_exc()[-2000:]
    except SectionTimeout:
        entry["status"] = "stopped at cap"
        raise


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------

def environment_section(report: Report, tokenizer):
    device = report.device

    def run(figures, notes, deadline):
        env = environment(1, device)
        figures.update({"python": env["python"], "platform": env["platform"], "packages": env["packages"],
                        "hardware": env["hardware"], "git": env["git"], "torch_version": torch.__version__,
                        "torch_cuda": torch.version.cuda, "tokenizer": TOKENIZER, "vocab": len(tokenizer),
                        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
                        "cudnn_tf32": torch.backends.cudnn.allow_tf32})
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            free, total = torch.cuda.mem_get_info(device)
            figures.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                            "gpu_memory_gib": round(total / GIB, 1), "gpu_free_gib": round(free / GIB, 1),
                            "multiprocessors": props.multi_processor_count,
                            "peak_bf16_tflops": peak_tflops(device), "bf16_supported": torch.cuda.is_bf16_supported()})
        else:
            notes.append("no CUDA device: CUDA-only figures (peak memory, bf16 speed, MFU) are skipped")
        disk = shutil.disk_usage(tempfile.gettempdir())
        figures["temp_disk_free_gib"] = round(disk.free / GIB, 1)

    report.section("environment", "0. Environment", run)


def fsdp_train_section(report: Report, tmp: Path):
    device, run = report.device, report.plan.fsdp

    def section(figures, notes, deadline):
        backend = "nccl" if device.type == "cuda" else "gloo"
        notes.append(f"torchrun --standalone --nproc_per_node 1 train.py, paper configs (base + models/{run.size} + "
                     f"methods/adam + mols), train.parallel=fsdp, a {backend} group of one: MoLS "
                     f"shards its statistics and exchanges gradients through the group's collectives")
        notes.append(f"launch 1: {run.steps} steps, MoLS at step {run.estimate_at}, a checkpoint every "
                     f"{run.checkpoint_every}; launch 2: run.resume=auto to {run.resumed_steps} steps")
        if device.type != "cuda":
            notes.append("CPU: gloo, no peak memory (train.py measures it on CUDA only); the estimate is recorded")
        problems = fsdp_mols_train(run, device, tmp, figures, deadline)
        figures["problems"] = problems
        report.check("fsdp_train_py_mols_checkpoint_resume", not problems,
                     "; ".join(problems) or f"{run.size} under FSDP ({backend}): calibrated at step "
                                             f"{run.estimate_at}, checkpointed, resumed from step {run.steps} and "
                                             f"finished step {run.resumed_steps}")
        if "peak_over_estimate" in figures:
            report.check("fsdp_peak_within_estimate", figures["peak_over_estimate"] <= 1.0,
                         f"peak allocated {figures['peak_memory_gib']:.2f} GiB, dry-run estimate "
                         f"{figures['estimate_gib']:.2f} GiB (ratio {figures['peak_over_estimate']:.2f}; <= 1: the "
                         f"estimate is an upper one)")

    report.section("fsdp_train", "1. train.py under FSDP with MoLS, a checkpoint and a resume", section)


def junit_outcomes(path: Path) -> dict[str, dict]:
    """{test name: {"outcome", "seconds"[, "message"]}} from pytest's --junit-xml file."""
    outcomes = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        entry = {"outcome": "passed", "seconds": round(float(case.get("time") or 0), 2)}
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                entry["outcome"] = {"skipped": "skipped", "failure": "failed", "error": "error"}[child.tag]
                entry["message"] = (child.get("message") or "")[:400]
        outcomes[case.get("name")] = entry
    return outcomes


def cuda_tests_section(report: Report, tmp: Path):
    def run(figures, notes, deadline):
        junit = tmp / "cuda_tests.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rfE",
                   f"--junit-xml={junit}", str(ROOT / "tests" / "test_cuda.py")]
        figures["command"] = " ".join(command[1:])
        launch = run_command(command, deadline - time.monotonic() - 2)
        lines = launch.stdout.strip().splitlines()
        figures.update({"exit_code": launch.returncode, "seconds": launch.seconds,
                        "result": lines[-1] if lines else "", "output_tail": launch.stdout[-3000:]})
        if junit.is_file():
            figures["tests"] = junit_outcomes(junit)
        if launch.timed_out:
            figures["result"] = "stopped at the section's cap: " + figures["result"]
            raise SectionTimeout()
        if report.device.type == "cuda":
            report.check("pytest_cuda", launch.returncode == 0, figures["result"])
        else:
            notes.append("no CUDA device: the tests are collected and skipped")

    report.section("cuda_tests", "2. Tests marked cuda", run)


def measure_speed(cfg: Config, vocab: int, device: torch.device, batches: list[dict], entry: dict, *,
                  compile_: bool, plan: Plan, deadline: float, steps: int | None = None) -> None:
    """The dry run's memory estimate for `cfg`; then build, warm up, and time whole updates
    (train_step, a sync per step as train.py's loop has) for plan.measure_s seconds or `steps`
    updates; `entry` is kept current after every step, so a section stopped at its cap keeps what
    was measured. On CUDA the peak allocated memory of the updates (weights, gradients, optimizer
    state, activations) is set against the estimate."""
    entry.update(memory_estimate(cfg, vocab, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    model, precision, autocast = prepare(cfg, vocab, device)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    sync(device)
    tokens = batches[0]["input_ids"].numel()
    fpt = flops_per_token(model, cfg.data.seq_len)
    peak = peak_tflops(device)
    entry.update({"precision": precision, "compile": compile_, "optimizer": cfg.optimizer.name,
                  "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
                  "micro_batch": batches[0]["input_ids"].shape[0], "seq_len": cfg.data.seq_len,
                  "tokens_per_step": tokens, "flops_per_token": fpt, "build_s": round(time.perf_counter() - started, 2),
                  "gradient_checkpointing": cfg.model.gradient_checkpointing})
    if device.type == "cuda":
        entry["build_peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        torch.cuda.reset_peak_memory_stats(device)
    train_model = torch.compile(model) if compile_ else model
    started = time.perf_counter()
    warm_losses = []
    for step in range(plan.warmup_steps):
        loss, _ = train_step(model, optimizer, [batches[step % len(batches)]], device, autocast,
                             grad_clip=cfg.train.grad_clip, train_model=train_model)
        warm_losses.append(float(loss))
    entry["warmup_s"] = round(time.perf_counter() - started, 2)  # with compile: its compile time
    entry["warmup_steps"] = plan.warmup_steps
    entry["first_losses"] = warm_losses
    limit = steps or plan.max_steps
    sync(device)
    started = time.perf_counter()
    step_times = []
    for step in range(limit):
        begun = time.perf_counter()
        loss, _ = train_step(model, optimizer, [batches[step % len(batches)]], device, autocast,
                             grad_clip=cfg.train.grad_clip, train_model=train_model)
        if not bool(torch.isfinite(loss)):  # the per-step sync train.py's loop has (its non-finite check)
            raise FloatingPointError(f"non-finite loss at timed step {step}")
        now = time.perf_counter()
        step_times.append(now - begun)
        seconds = now - started
        rate = tokens * len(step_times) / seconds
        entry.update({"timed_steps": len(step_times), "timed_s": round(seconds, 3), "tokens_per_s": rate,
                      "step_s": seconds / len(step_times), "step_s_min": min(step_times), "last_loss": float(loss)})
        if peak:
            entry["mfu"] = rate * fpt / (peak * 1e12)
        if device.type == "cuda":
            entry["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / GIB  # the warm-up's included
            entry["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
            entry["peak_over_estimate"] = entry["peak_alloc_gib"] / entry["estimate_gib"]
        if steps is None and seconds >= plan.measure_s:
            break
        if time.monotonic() > deadline - 2 * (now - begun) - 1:
            entry["note"] = "timing cut short by the section's cap"
            break
    entry["optimizer_state_gib"] = optimizer_state_bytes(optimizer) / GIB


def throughput_section(report: Report, tokenizer, tmp: Path):
    device, plan = report.device, report.plan
    vocab = len(tokenizer)
    compile_ = report.compile

    def cfg_for(size):
        overrides = ["optimizer.lr=1e-3", f"data.seq_len={plan.speed_seq}"]
        if plan.speed_micro_batch:
            overrides += [f"train.micro_batch={plan.speed_micro_batch}", f"train.global_batch={plan.speed_micro_batch}"]
        return paper_config(size, device=device, precision=None, overrides=overrides)  # the paper's precision

    def run(figures, notes, deadline):
        precision = resolve_precision(cfg_for(plan.speed_sizes[0]).train.precision, device)
        notes.append(f"the paper's precision ({precision}, base.yaml), AdamW, one micro-batch per update (the paper "
                     f"config's micro-batch), packed real text; tokens/s over >= {plan.measure_s:.0f} s after "
                     f"{plan.warmup_steps} warm-up steps; peak allocated memory of the updates against the dry "
                     f"run's estimate for the same config (training.dry_run.device_memory, one device)")
        if device.type != "cuda":
            notes.append("CPU: no MFU or peak memory (CUDA-only); the estimates are recorded")
        eager, compiled = figures.setdefault("eager", {}), figures.setdefault("compile", {})
        for size in plan.speed_sizes:
            cfg = cfg_for(size)
            batches = text_batches(tokenizer, batch_size=cfg.train.micro_batch, seq_len=cfg.data.seq_len, count=4,
                                   vocab_limit=cfg.model.vocabulary(vocab))
            attempt(eager, size, lambda entry: measure_speed(cfg, vocab, device, batches, entry, compile_=False,
                                                             plan=plan, deadline=deadline))
            free_memory(device)
            report.write()
        over = {s: e["peak_over_estimate"] for s, e in eager.items() if "peak_over_estimate" in e}
        if over:
            report.check("throughput_peak_within_estimate", all(v <= 1.0 for v in over.values()),
                         "peak allocated / dry-run estimate: " + ", ".join(f"{s} {v:.2f}" for s, v in over.items())
                         + " (<= 1: the estimate is an upper one)")
        attempt(figures, "train_py", lambda entry: train_py_run(report, tmp, entry, deadline))
        free_memory(device)
        report.write()
        if not compile_:
            notes.append("torch.compile not measured here (on by default on CUDA only; --compile on forces it)")
            return
        for size in plan.speed_sizes:
            if time.monotonic() > deadline - plan.compile_min_s:
                compiled[size] = {"status": "not measured: the section's cap"}
                continue
            cfg = cfg_for(size)
            batches = text_batches(tokenizer, batch_size=cfg.train.micro_batch, seq_len=cfg.data.seq_len, count=4,
                                   vocab_limit=cfg.model.vocabulary(vocab))
            attempt(compiled, size, lambda entry: measure_speed(cfg, vocab, device, batches, entry, compile_=True,
                                                                plan=plan, deadline=deadline))
            torch._dynamo.reset()
            free_memory(device)
            report.write()

    report.section("throughput", "3. Throughput of the paper sizes", run)


def train_py_run(report: Report, tmp: Path, entry: dict, deadline: float) -> None:
    """One real train.py run (llama_60m, the paper's configs) on token shards of the real text:
    end-to-end tokens/s of the actual loop (data, logging, per-step checks) to set against the
    in-process figure. Its run directory (with the final checkpoint) is deleted once read."""
    device, plan = report.device, report.plan
    shards = {}
    for split in ("train", "val"):
        shards[split] = tmp / f"shards-{split}"
        if not (shards[split] / "manifest.json").is_file():
            made = run_command([sys.executable, str(ROOT / "scripts" / "pretokenize.py"), "--source", "local",
                                "--path", str(ASSETS / f"{split}.jsonl"), "--split", split, "--tokenizer", TOKENIZER,
                                "--out", str(shards[split]), "--workers", "1", "--quiet"],
                               deadline - time.monotonic() - 5)
            if made.returncode:
                raise RuntimeError(f"pretokenize.py exited with {made.returncode}: {made.stderr_tail(3)}")
    size, steps = plan.e2e_size, plan.e2e_steps
    cfg = paper_config(size, device=device, precision=None)
    micro = plan.speed_micro_batch or cfg.train.micro_batch
    command = [sys.executable, str(ROOT / "train.py")]
    for path in paper_layers(size):
        command += ["--config", str(path)]
    for item in [f"model.size={size}", "data.source=tokens", f"data.path={shards['train']}",
                 f"data.val_path={shards['val']}", f"data.tokenizer={TOKENIZER}", "data.packing=true",
                 f"data.seq_len={plan.speed_seq}", "data.val_tokens=2000", f"train.device={device.type}",
                 f"train.steps={steps}", f"train.micro_batch={micro}", f"train.global_batch={micro}",
                 f"train.log_every={steps // 2}", "train.eval_every=1000000", "train.checkpoint_every=0",
                 "optimizer.lr=1e-3", "run.wandb.mode=disabled", f"run.out_dir={tmp / 'runs'}", "run.name=train_py"]:
        command += ["--set", item]
    entry.update({"size": size, "steps": steps, "micro_batch": micro, "seq_len": plan.speed_seq,
                  "precision": resolve_precision(cfg.train.precision, device), "command": " ".join(command[1:])})
    run_dir = tmp / "runs" / "train_py"
    free_memory(device)
    try:
        launch = run_command(command, min(plan.e2e_cap_s, deadline - time.monotonic() - 5))
        entry.update({"exit_code": launch.returncode, "wall_s": launch.seconds})
        if launch.timed_out:
            entry["status"] = "stopped at cap"
        elif launch.returncode:
            entry["stderr_tail"] = launch.stderr_tail()
            raise RuntimeError(f"train.py exited with {launch.returncode}: "
                               f"{(launch.stderr.strip().splitlines() or [''])[-1]}")
    finally:
        records = read_metrics(run_dir / "metrics.jsonl")
        windows = [r for r in records if r["kind"] == "train"]
        if windows:  # the last window: after the first one's warm-up
            last = windows[-1]
            entry.update({k: last[k] for k in ("tok_per_s", "step_s", "data_wait_s", "mfu", "mem_alloc_gib",
                                                "mem_reserved_gib", "loss") if k in last})
            entry["window_steps"] = steps - (windows[-2]["step"] if len(windows) > 1 else 0)
        if run_dir.is_dir():
            entry["run_dir_gib"] = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file()) / GIB
            shutil.rmtree(run_dir, ignore_errors=True)
    eager = report.data["sections"]["throughput"]["figures"]["eager"].get(size, {})
    if "tok_per_s" in entry and eager.get("tokens_per_s"):
        entry["train_py_over_in_process"] = entry["tok_per_s"] / eager["tokens_per_s"]


def mols_section(report: Report, tokenizer):
    device, plan = report.device, report.plan
    vocab = len(tokenizer)
    paper_samples = 16384   # configs/paper/mols.yaml
    paper_batch = 512       # sequences per update (base.yaml)

    def one(size, entry, deadline):
        overrides = ["optimizer.lr=1e-3", f"data.seq_len={plan.speed_seq}"]
        if plan.speed_micro_batch:
            overrides += [f"train.micro_batch={plan.speed_micro_batch}", f"train.global_batch={plan.speed_micro_batch}"]
        cfg = paper_config(size, device=device, precision=None, overrides=overrides, mols=True)
        micro = cfg.train.micro_batch
        batches = text_batches(tokenizer, batch_size=micro, seq_len=cfg.data.seq_len, count=plan.mols_samples + 4,
                               vocab_limit=cfg.model.vocabulary(vocab), seed=1)
        measure_speed(cfg, vocab, device, batches, entry, compile_=False,
                      plan=dataclasses.replace(plan, warmup_steps=2), deadline=deadline, steps=5)
        free_memory(device)  # measure_speed's model is gone: build the one to calibrate
        model, _, autocast = prepare(cfg, vocab, device)
        optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
        mols = MoLS(model, optimizer, cfg.mols, estimate_step=0, warmup_steps=10, device=device)

        def samples(stats_deadline):
            for i, batch in enumerate(batches):
                if i >= plan.mols_samples or (i >= 2 and time.monotonic() > stats_deadline):
                    return
                yield to_device(batch, device)

        with autocast():
            calibration = mols.calibrate(model, samples(deadline - 10), mean_loss)
        per_sequence = calibration.seconds / calibration.sequences
        step_s = entry["step_s"]
        entry["calibration_cpu_stats"] = {
            "gradient_samples": calibration.gradient_samples, "sequences": calibration.sequences,
            "seconds": calibration.seconds, "seconds_per_sample": calibration.seconds / calibration.gradient_samples,
            "seconds_per_sequence": per_sequence, "alphas": calibration.alphas,
            "sample_over_step": calibration.seconds / calibration.gradient_samples / step_s}
        entry["paper_projection"] = {
            "sequences": paper_samples, "calibration_s": paper_samples * per_sequence,
            "update_s_one_gpu": step_s * paper_batch / micro,
            "calibration_in_updates": paper_samples * per_sequence / (step_s * paper_batch / micro),
            "note": f"one GPU: a {paper_batch}-sequence update = {paper_batch // micro} micro-steps of {micro}"}
        if device.type == "cuda" and time.monotonic() < deadline - 10:
            with autocast():
                measured = measure_module_snr(model, samples(deadline - 5), mols.segments, loss_fn=mean_loss,
                                              stats_device=device)
            entry["calibration_device_stats"] = {
                "gradient_samples": measured.gradient_samples, "seconds": measured.seconds,
                "seconds_per_sample": measured.seconds / measured.gradient_samples,
                "sample_over_step": measured.seconds / measured.gradient_samples / step_s}

    def run(figures, notes, deadline):
        notes.append("configs/paper/mols.yaml (statistics on the CPU), the paper's precision; one gradient sample = "
                     "one micro-batch; step_s = one update of one micro-batch (AdamW)")
        for size in plan.mols_sizes:
            attempt(figures, size, lambda entry: one(size, entry, deadline))
            free_memory(device)
            report.write()

    report.section("mols_cost", "4. MoLS calibration cost", run)


def seven_b_section(report: Report, tokenizer):
    device, plan = report.device, report.plan
    vocab = len(tokenizer)

    def run(figures, notes, deadline):
        paths = [PAPER / "base.yaml", PAPER / "models" / "llama_7b.yaml", PAPER / "methods" / "adam8bit.yaml"]
        cfg = load_config(paths, [
            f"model.size={plan.seven_size}", f"train.device={device.type}",
            f"train.micro_batch={plan.seven_micro_batch}", f"train.global_batch={plan.seven_micro_batch}",
            f"data.seq_len={plan.seven_seq}", "optimizer.lr=5e-4",
            "run.wandb.mode=disabled", "train.checkpoint_every=0"])
        notes.append(f"configs/paper: base + models/llama_7b + methods/adam8bit ({cfg.optimizer.name}, "
                     f"{cfg.train.precision}, gradient checkpointing {cfg.model.gradient_checkpointing}), "
                     f"micro-batch {plan.seven_micro_batch} x {plan.seven_seq}, size {plan.seven_size}")
        notes.append("MFU counts 6N + attention per token, not checkpointing's recomputed forward")
        batches = text_batches(tokenizer, batch_size=plan.seven_micro_batch, seq_len=plan.seven_seq, count=4,
                               vocab_limit=cfg.model.vocabulary(vocab))
        figures["size"] = plan.seven_size
        measure_speed(cfg, vocab, device, batches, figures, compile_=False,
                      plan=dataclasses.replace(plan, warmup_steps=1), deadline=deadline, steps=plan.seven_steps)
        report.check("llama_7b_table3_steps", figures.get("timed_steps", 0) >= 1
                     and math.isfinite(figures.get("last_loss", float("nan"))),
                     f"{figures.get('timed_steps', 0)} timed steps of {_f(figures.get('step_s'), '.2f')} s, "
                     f"peak {_f(figures.get('peak_alloc_gib'), '.1f')} GiB allocated (estimate "
                     f"{_f(figures.get('estimate_gib'), '.1f')} GiB)")

    report.section("llama_7b", "5. llama_7b, Table 3 setup", run)


def correctness_section(report: Report, tokenizer):
    device, plan = report.device, report.plan
    vocab = len(tokenizer)
    common = (f"model.vocab_size={vocab}", "optimizer.lr=1e-3")

    def run(figures, notes, deadline):
        notes.append(f"real text (tests/assets), {plan.curve_size} shape with the tokenizer's {vocab}-row "
                     f"vocabulary: chance is ln({vocab}) = {math.log(vocab):.2f}")
        if device.type != "cuda":
            notes.append("on the CPU bf16-mixed is CPU autocast: the comparison runs, but says nothing about CUDA")
        batches = text_batches(tokenizer, batch_size=plan.curve_batch, seq_len=plan.curve_seq, count=64)
        val = text_batches(tokenizer, "val", batch_size=plan.curve_batch, seq_len=plan.curve_seq, count=8, seed=None)

        def grads(entry):
            configs = {p: paper_config(plan.curve_size, device=device, precision=p, overrides=common)
                       for p in ("fp32", "bf16-mixed")}
            got = {}
            for precision, cfg in configs.items():
                model, _, autocast = prepare(cfg, vocab, device)
                got[precision] = gradients(model, batches[0], device, autocast)
                if precision == "fp32":
                    first = {n: p.detach().clone() for n, p in model.named_parameters()}
                else:  # both built from cfg.run.seed: the same weights
                    entry["same_initial_weights"] = all(torch.equal(first[n], p) for n, p in model.named_parameters())
                del model
            per_tensor = gradient_agreement(got["fp32"], got["bf16-mixed"])
            worst = min(per_tensor, key=lambda n: per_tensor[n]["cosine"])
            entry.update({"batch": list(batches[0]["input_ids"].shape), "tensors": len(per_tensor),
                          "min_cosine": per_tensor[worst]["cosine"], "min_cosine_tensor": worst,
                          "max_relative_difference": max(v["relative_difference"] for v in per_tensor.values()),
                          "per_tensor": per_tensor})
            report.check("gradients_bf16_vs_fp32", entry["min_cosine"] > 0.99 and entry["same_initial_weights"]
                         and entry["max_relative_difference"] > 1e-3,  # else autocast did not run in bf16
                         f"min per-tensor cosine {entry['min_cosine']:.5f} ({worst}), max relative difference "
                         f"{entry['max_relative_difference']:.2g}; > 0.99 and > 1e-3 (really bf16) required")

        def rope(entry):
            cfg = paper_config("llama_micro", device=device, precision="bf16-pure", overrides=common)
            model, _, _ = prepare(cfg, vocab, device)
            buffers = {n: str(b.dtype) for n, b in model.named_buffers() if "inv_freq" in n}
            entry["buffers"] = buffers
            entry["weights"] = str(next(model.parameters()).dtype)
            report.check("rope_inv_freq_fp32_under_bf16_pure", all(v == "torch.float32" for v in buffers.values()),
                         f"bf16-pure: {buffers}")

        def curve(entry):
            for precision in ("fp32", "bf16-mixed"):
                cfg = paper_config(plan.curve_size, device=device, precision=precision,
                                   overrides=(*common, f"optimizer.lr={plan.curve_lr}"))
                started = time.perf_counter()
                entry[precision] = loss_curve(cfg, vocab, device, batches, plan.curve_steps, val)
                entry[precision]["seconds"] = round(time.perf_counter() - started, 2)
                free_memory(device)
            a, b = entry["fp32"]["train_loss"], entry["bf16-mixed"]["train_loss"]
            tail = min(5, len(a))
            last_a, last_b = sum(a[-tail:]) / tail, sum(b[-tail:]) / tail
            entry.update({"steps": plan.curve_steps, "lr": plan.curve_lr, "warmup_steps": 5,
                          "tokens_per_step": plan.curve_batch * plan.curve_seq,
                          "chance": math.log(vocab), "last5_fp32": last_a, "last5_bf16": last_b,
                          "last5_difference": last_b - last_a,
                          "max_abs_difference": max(abs(x - y) for x, y in zip(a, b)),
                          "val_difference": entry["bf16-mixed"]["val_loss_after"] - entry["fp32"]["val_loss_after"]})
            val_a, val_b = entry["fp32"]["val_loss_after"], entry["bf16-mixed"]["val_loss_after"]
            report.check("loss_bf16_vs_fp32", abs(last_b - last_a) < 0.05 and abs(val_b - val_a) < 0.05
                         and max(val_a, val_b) < math.log(vocab) - 1.0,
                         f"last-5-step mean loss fp32 {last_a:.4f}, bf16-mixed {last_b:.4f} (chance "
                         f"{math.log(vocab):.2f}); validation {val_a:.4f} vs {val_b:.4f}; differences < 0.05 and "
                         f"validation < chance - 1 required")

        def snr(entry):
            cfg = paper_config(plan.curve_size, device=device, precision="auto", overrides=common)
            model, precision, autocast = prepare(cfg, vocab, device)
            segments = classify(model.named_parameters(), cfg.mols.grouping)
            started = time.perf_counter()
            on_cpu, on_device = snr_on_cpu_and_device(model, batches[:plan.snr_samples], segments, device, autocast)
            rel = relative_differences(on_cpu, on_device)
            entry.update({"precision": precision, "samples": plan.snr_samples, "module_snr_cpu": on_cpu,
                          "module_snr_device": on_device, "relative_difference": rel,
                          "max_relative_difference": max(rel.values()),
                          "seconds": round(time.perf_counter() - started, 2)})
            if device.type != "cuda":
                entry["note"] = "statistics device = CPU here: CPU against CPU"
            report.check("mols_snr_cpu_vs_device", entry["max_relative_difference"] < 1e-5,
                         f"max relative difference {entry['max_relative_difference']:.2e} over {len(rel)} classes")

        def optimizers(entry):
            for method in OPTIMIZERS:
                attempt(entry, method, functools.partial(one_optimizer, method))
            failed = [m for m in OPTIMIZERS if entry.get(m, {}).get("status") != "ok"]
            report.check("optimizers_step_on_device", not failed,
                         "all stepped, finite, with and without MoLS" if not failed else f"failed: {failed}")

        def one_optimizer(method, entry):
            cfg = paper_config(plan.curve_size, method, device=device, precision="auto", overrides=common)
            model, _, autocast = prepare(cfg, vocab, device)
            optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
            losses, seconds = [], []
            for step in range(plan.optimizer_steps):
                started = time.perf_counter()
                loss, _ = train_step(model, optimizer, [batches[step]], device, autocast)
                losses.append(float(loss))
                seconds.append(time.perf_counter() - started)
            entry.update({"losses": losses, "step_s": seconds, "state_mib": optimizer_state_bytes(optimizer) / 2**20})
            mols = MoLS(model, optimizer, cfg.mols, estimate_step=0, warmup_steps=2, device=device)
            with autocast():
                calibration = mols.calibrate(model, (to_device(b, device) for b in batches[:4]), mean_loss)
            loss, _ = train_step(model, optimizer, [batches[plan.optimizer_steps]], device, autocast)
            entry.update({"mols_alphas": calibration.alphas, "loss_after_mols_step": float(loss)})
            finite = all(math.isfinite(v) for v in [*losses, float(loss), *calibration.alphas.values()])
            finite = finite and all(torch.isfinite(p).all() for p in model.parameters())
            if not finite:
                raise FloatingPointError("a non-finite loss, alpha or weight")

        for name, step in (("gradients", grads), ("rope_inv_freq", rope), ("loss_curve", curve),
                           ("snr_cpu_vs_device", snr), ("optimizers", optimizers)):
            attempt(figures, name, step)
            free_memory(device)
            report.write()

    report.section("correctness", "6. Correctness on real text (if time is left)", run)


# ------------------------------------------------------------------------------------------------
# The summary
# ------------------------------------------------------------------------------------------------

def _f(value, spec: str = ".3g", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _pct(fraction) -> str:
    return _f(None if fraction is None else 100 * fraction, ".1f") + "%"


def _status(item: dict) -> str:
    return f"{item.get('status', '?')}" + (f" ({item['error']})" if "error" in item else "")


def _fsdp_lines(figures: dict) -> list[str]:
    if "size" not in figures:
        return []
    lines = [f"  {figures['size']}, {figures.get('precision')}, {figures['backend']}, micro-batch "
             f"{figures['micro_batch']} x {figures['seq_len']}, global {figures['global_batch']}, MoLS "
             f"{figures['mols_samples']} sequences at step {figures['estimate_at']}"]
    for key in ("first", "resumed"):
        e = figures.get(key)
        if e:
            lines.append(f"  launch {key}: exit {e.get('exit_code')} after {e.get('seconds')} s, last step "
                         f"{e.get('last_step')}"
                         + (f", resumed from {e.get('resumed_from')}" if key == "resumed" else "")
                         + f", checkpoints {e.get('checkpoints', [])}, peak {_f(e.get('peak_memory_gib'), '.2f')} GiB")
            if "stderr_tail" in e:
                lines += ["    " + line for line in e["stderr_tail"].splitlines()[-12:]]
    lines += ["  " + line for line in figures.get("calibration", {}).get("table", [])]
    lines.append(f"  memory: peak allocated {_f(figures.get('peak_memory_gib'), '.2f')} GiB, dry-run estimate "
                 f"{_f(figures.get('estimate_gib'), '.2f')} GiB (peak / estimate "
                 f"{_f(figures.get('peak_over_estimate'), '.2f')}): "
                 + ", ".join(f"{k} {v:.3g}" for k, v in figures.get("estimate_parts_gib", {}).items()))
    lines += [f"  problem: {p}" for p in figures.get("problems", [])]
    return lines


def _cuda_tests_lines(figures: dict) -> list[str]:
    lines = [f"  pytest: {figures['result']}"] if "result" in figures else []
    tests = figures.get("tests", {})
    for name, t in tests.items():
        if t["outcome"] in ("failed", "error"):
            lines.append(f"  {t['outcome']}: {name}: {t.get('message', '')}")
    slowest = sorted(tests.items(), key=lambda item: -item[1]["seconds"])[:5]
    if slowest and slowest[0][1]["seconds"] > 0.5:
        lines.append("  slowest: " + ", ".join(f"{name} {t['seconds']:.1f} s" for name, t in slowest))
    return lines


def _correctness_lines(figures: dict) -> list[str]:
    lines = []
    g = figures.get("gradients", {})
    if "min_cosine" in g:
        lines.append(f"  gradients bf16-mixed vs fp32, one batch {g['batch']}: min cosine {g['min_cosine']:.5f} "
                     f"({g['min_cosine_tensor']}), max relative difference {g['max_relative_difference']:.3g}")
    r = figures.get("rope_inv_freq", {})
    if "buffers" in r:
        lines.append(f"  bf16-pure: weights {r['weights']}, {r['buffers']}")
    c = figures.get("loss_curve", {})
    if "last5_fp32" in c:
        fp32, bf16 = c["fp32"], c["bf16-mixed"]
        lines.append(f"  loss, {c['steps']} steps of {c['tokens_per_step']} tokens (lr {c['lr']:g}): last 5 steps fp32 "
                     f"{c['last5_fp32']:.4f}, bf16-mixed {c['last5_bf16']:.4f} (chance {c['chance']:.2f}); max "
                     f"|difference| {c['max_abs_difference']:.4f}; validation {fp32['val_loss_before']:.3f} -> "
                     f"{fp32['val_loss_after']:.4f} vs {bf16['val_loss_after']:.4f}")
        for i in range(0, c["steps"], max(1, c["steps"] // 5)):
            lines.append(f"    step {i + 1:>3}: fp32 {fp32['train_loss'][i]:.4f}  "
                         f"bf16-mixed {bf16['train_loss'][i]:.4f}")
    snr = figures.get("snr_cpu_vs_device", {})
    if "max_relative_difference" in snr:
        values = ", ".join(f"{k} {v:.3g}" for k, v in snr["module_snr_cpu"].items())
        lines.append(f"  MoLS SNR, statistics on the CPU vs the device, {snr['samples']} samples: max relative "
                     f"difference {snr['max_relative_difference']:.2e} ({values})")
    for method, o in figures.get("optimizers", {}).items():
        if isinstance(o, dict) and "status" in o:
            losses = " ".join(f"{v:.3f}" for v in o.get("losses", []))
            after = (f", after a MoLS calibration {o['loss_after_mols_step']:.3f}"
                     if "loss_after_mols_step" in o else "")
            lines.append(f"  {method:<10} {_status(o)}: losses {losses}{after}")
    for name in ("gradients", "rope_inv_freq", "loss_curve", "snr_cpu_vs_device", "optimizers"):
        item = figures.get(name, {})
        if item.get("status") not in (None, "ok"):
            lines.append(f"  {name}: {_status(item)}")
    return lines


def _throughput_lines(figures: dict) -> list[str]:
    lines = ["  | model | precision | compile | tokens/s | MFU | step s | peak alloc GiB | estimate GiB "
             "| peak / estimate | reserved GiB | warm-up s | status |",
             "  |---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("eager", "compile"):
        for size, e in figures.get(mode, {}).items():
            cells = [size, e.get("precision", "-"), str(mode == "compile"), _f(e.get("tokens_per_s"), ",.0f"),
                     _pct(e.get("mfu")), _f(e.get("step_s"), ".4f"), _f(e.get("peak_alloc_gib"), ".2f"),
                     _f(e.get("estimate_gib"), ".2f"), _f(e.get("peak_over_estimate"), ".2f"),
                     _f(e.get("peak_reserved_gib"), ".2f"), _f(e.get("warmup_s"), ".1f"), _status(e)]
            lines.append("  | " + " | ".join(cells) + " |")
    t = figures.get("train_py", {})
    if t:
        lines.append(f"  train.py end to end ({t.get('size')}, {t.get('precision')}, {t.get('steps')} steps): "
                     f"{_f(t.get('tok_per_s'), ',.0f')} tokens/s in its last window, step "
                     f"{_f(t.get('step_s'), '.4f')} s, data wait {_f(t.get('data_wait_s'), '.4f')} s; "
                     f"train.py / in-process {_f(t.get('train_py_over_in_process'), '.3f')}; {_status(t)}")
    return lines


def _seven_b_lines(e: dict) -> list[str]:
    if not e:
        return []
    return [f"  {e.get('size')}: {e.get('timed_steps', 0)} steps, step {_f(e.get('step_s'), '.3f')} s, "
            f"{_f(e.get('tokens_per_s'), ',.0f')} tokens/s, MFU {_pct(e.get('mfu'))}, peak allocated "
            f"{_f(e.get('peak_alloc_gib'), '.1f')} GiB (dry-run estimate {_f(e.get('estimate_gib'), '.1f')} GiB, "
            f"ratio {_f(e.get('peak_over_estimate'), '.2f')}), reserved {_f(e.get('peak_reserved_gib'), '.1f')} GiB, "
            f"optimizer state {_f(e.get('optimizer_state_gib'), '.2f')} GiB; build {_f(e.get('build_s'), '.1f')} s"]


def _mols_lines(figures: dict) -> list[str]:
    lines = []
    for size, e in figures.items():
        c, p = e.get("calibration_cpu_stats", {}), e.get("paper_projection", {})
        if not c:
            lines.append(f"  {size}: {_status(e)}")
            continue
        gpu = e.get("calibration_device_stats")
        lines.append(f"  {size} ({e.get('precision')}): an update of {e.get('micro_batch')} sequences "
                     f"{e['step_s']:.4f} s; a gradient sample with CPU statistics {c['seconds_per_sample']:.3f} s = "
                     f"{c['sample_over_step']:.1f} updates"
                     + (f" (GPU statistics {gpu['seconds_per_sample']:.3f} s)" if gpu else "")
                     + f"; the paper's {p['sequences']:,} sequences: {p['calibration_s']:.0f} s = "
                     f"{p['calibration_in_updates']:.1f} updates of 512 sequences on one GPU")
    return lines


def summary(data: dict) -> str:
    sections, head = data["sections"], data["report"]
    env = sections.get("environment", {}).get("figures", {})
    machine = env.get("gpu", env.get("hardware", {}).get("cpu", "?"))
    lines = [f"# GPU report ({'quick, ' if head['quick'] else ''}{head['device']})", "",
             f"machine: {machine}; torch {env.get('torch_version')} (CUDA {env.get('torch_cuda')}), transformers "
             f"{env.get('packages', {}).get('transformers')}; date {head['date']}; elapsed {head.get('elapsed_s')} s "
             f"of a {head['budget_s']:.0f} s budget",
             f"command: `{head['command']}`", ""]
    describe = {"fsdp_train": _fsdp_lines, "cuda_tests": _cuda_tests_lines, "throughput": _throughput_lines,
                "mols_cost": _mols_lines, "llama_7b": _seven_b_lines, "correctness": _correctness_lines}
    for key, record in sections.items():
        lines.append(f"## {record['title']}: {record['status']} ({record.get('seconds', 0)} s of a "
                     f"{record['cap_s']} s cap)" + (f": {record['error']}" if "error" in record else ""))
        lines += [f"  note: {n}" for n in record.get("notes", [])]
        try:
            lines += describe.get(key, lambda f: [])(record.get("figures", {}))
        except Exception as err:  # figures cut short where the summary expected more: the JSON has them
            lines.append(f"  (no summary of these figures: {error_text(err)})")
        lines.append("")
    if data.get("checks"):
        lines.append("## Checks")
        lines += [f"  {'PASS' if c['passed'] else 'FAIL'} {name}: {c['detail']}" for name, c in data["checks"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"),
                        help="folder for gpu_report.json and gpu_report.md (default: $OUT)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"total seconds, start-up included (default {FULL.budget_s:.0f}; --quick "
                             f"{QUICK.budget_s:.0f}): the report stops by itself inside it, each section within its "
                             f"own cap (the caps scale with the budget)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, few steps, CPU allowed: checks the script end to end (minutes on a CPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="measure torch.compile too (auto: on CUDA only; on a CPU its compile takes minutes)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="where the temporary run folder goes (default: the system's)")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out DIR is required when $OUT is not set")
    device = torch.device("cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()))
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if device.type == "cpu" and not args.quick:
        parser.error("the full report needs a CUDA device (the paper sizes on a CPU take hours); use --quick")
    plan = QUICK if args.quick else FULL
    budget = args.budget_s or plan.budget_s
    # The last resort if something hangs where SIGALRM cannot reach (inside one C call): dump the
    # stacks and exit, inside a 10-minute command limit; every finished section is in the JSON already.
    faulthandler.dump_traceback_later(budget + 20, exit=True)
    args.out.mkdir(parents=True, exist_ok=True)
    scale = budget / plan.budget_s  # the caps are set for the default budget
    plan = dataclasses.replace(plan, caps={k: v * scale for k, v in plan.caps.items()})
    compile_ = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    report = Report(args.out, budget, device, plan, compile_, args.quick, argv)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_report_", dir=args.tmp))
    report.data["report"]["tmp"] = str(tmp)
    # torch.compile's caches (Inductor's and Triton's) go with the rest of the temporary files
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(tmp / "triton"))
    try:
        tokenizer = get_tokenizer(TOKENIZER)
        environment_section(report, tokenizer)
        fsdp_train_section(report, tmp)
        cuda_tests_section(report, tmp)
        throughput_section(report, tokenizer, tmp)
        mols_section(report, tokenizer)
        seven_b_section(report, tokenizer)
        correctness_section(report, tokenizer)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        report.data["report"]["finished"] = True
        report.write()
        text = summary(report.data)
        write_text_atomic(args.out / "gpu_report.md", text)
        print("\n" + text, flush=True)
        print(f"wrote {args.out / 'gpu_report.json'} and {args.out / 'gpu_report.md'}", flush=True)
        faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())

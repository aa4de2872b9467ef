#!/usr/bin/env python3
"""How many samples are enough: MoLS's module SNRs and alphas (with 95% intervals) against K.

    python scripts/calibration_study.py                       # the full study (docs/calibration.md)
    python scripts/calibration_study.py --quick --out-dir /tmp/cs   # a one-minute smoke run (the test)

K is the number of gradient samples of a calibration: one sample is the gradient of one extra
micro-batch (see the README's MoLS section). Three parts, each written to the JSON as it ends:

  alpha_vs_k   for each model (llama_tiny as in configs/quickstart.yaml, and a larger one), ONE
               model state after a short AdamW training, ONE stream of extra micro-batches (the
               stream train.py gives MoLS), module SNRs and alphas (paper's rule: reference vo, no
               floor) at K = 16, 32, ... from the first K micro-batches of that stream, with the
               jackknife intervals (mols.uncertainty_groups), for snr: plain and snr: corrected.
  micro_batch  the same model states, a fixed number of sequences cut into micro-batches of
               different sizes (the same sequences in the same order: K = sequences / size).
  table12      configs/quickstart.yaml with MoLS (as `make quickstart` runs it) and mols.samples
               small vs large, over seeds (run.seed s, data.shuffle_seed 42 + s), and plain AdamW
               on the same seeds: final validation loss. Each run is `python train.py --config
               configs/quickstart.yaml --set ...` in its own run directory under --out-dir.

The measurements fold the micro-batches once into mols.snr.GradientMoments (the estimator
behind measure_module_snr and MoLS.calibrate, with its jackknife groups) and read the statistics
of every K on the way; the smallest K is also measured with MoLS.calibrate itself on a fresh
copy of the stream, and the two must agree (`calibrate_check` in the JSON). Writes
<out-dir>/calibration_study.json (every number), <out-dir>/calibration_tables.md and the plot
(alpha vs K with interval bars per module class, both models). Threads: --threads (2).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
CLASSES = ("emb", "qk", "vo", "mlp", "head")
SCALED_SHOWN = ("emb", "qk", "mlp")     # the classes whose alpha the tables show
GROUPS = 4                               # mols.uncertainty_groups (the default)

# model label -> config overrides on configs/quickstart.yaml
MODELS = {
    "llama_tiny": [],
    "llama_60m-8k": ["model.size=llama_60m", "model.vocab_size=8000"],
    "llama_micro": ["model.size=llama_micro"],
}
FULL = dict(models=["llama_tiny", "llama_60m-8k"], train_steps=20, sample_sequences=8, ks=[16, 32, 64, 128, 256],
            mb_sequences=512, mb_sizes=[4, 8, 16, 32], seeds=[0, 1, 2], table12_samples=[128, 2048],
            table12_set=[], baseline=True)
QUICK = dict(models=["llama_micro"], train_steps=2, sample_sequences=4, ks=[4, 8, 16],
             mb_sequences=32, mb_sizes=[2, 4], seeds=[0], table12_samples=[16, 64],
             table12_set=["model.size=llama_micro", "train.steps=4", "train.warmup_steps=2", "data.val_tokens=4096"],
             baseline=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: llama_micro, few K values, 1 seed, a few steps (about a minute)")
    parser.add_argument("--out-dir", default=None,
                        help="JSON, tables and the Table 12 run directories (default /tmp/calibration_study, "
                             "with --quick /tmp/calibration_study_quick)")
    parser.add_argument("--plot", default=None,
                        help="the plot's path (default docs/calibration_alpha_vs_k.png; with --quick, in --out-dir)")
    parser.add_argument("--parts", default="alpha_vs_k,micro_batch,table12",
                        help="comma-separated: alpha_vs_k, micro_batch, table12 (default all three)")
    parser.add_argument("--models", default=None, help=f"comma-separated labels of {', '.join(MODELS)}")
    parser.add_argument("--ks", default=None, help="K values (gradient samples), e.g. 16,32,64,128,256")
    parser.add_argument("--sample-sequences", type=int, default=None, help="sequences per gradient sample (8)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="AdamW updates before the measurement (20; on the quickstart's schedule)")
    parser.add_argument("--mb-sequences", type=int, default=None, help="sequences of the micro-batch part (512)")
    parser.add_argument("--mb-sizes", default=None, help="micro-batch sizes of that part, e.g. 4,8,16,32")
    parser.add_argument("--seeds", default=None, help="Table 12 seeds, e.g. 0,1,2")
    parser.add_argument("--table12-samples", default=None, help="mols.samples of Table 12, e.g. 128,2048")
    parser.add_argument("--no-baseline", action="store_true", help="Table 12 without the plain AdamW runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every Table 12 run (train.py --set)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the parts already in --out-dir's JSON and the finished Table 12 runs")
    parser.add_argument("--tables-only", action="store_true",
                        help="only rewrite the tables and the plot from --out-dir's JSON")
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = "/tmp/calibration_study_quick" if args.quick else "/tmp/calibration_study"
    plan = dict(QUICK if args.quick else FULL)
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    for key, value in (("models", args.models and args.models.split(",")), ("ks", args.ks and ints(args.ks)),
                       ("sample_sequences", args.sample_sequences), ("train_steps", args.train_steps),
                       ("mb_sequences", args.mb_sequences), ("mb_sizes", args.mb_sizes and ints(args.mb_sizes)),
                       ("seeds", args.seeds and ints(args.seeds)),
                       ("table12_samples", args.table12_samples and ints(args.table12_samples))):
        if value is not None:
            plan[key] = value
    if args.no_baseline:
        plan["baseline"] = False
    plan["table12_set"] = plan["table12_set"] + args.set
    unknown = [m for m in plan["models"] if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r} (known: {', '.join(MODELS)})")
    parts = args.parts.split(",")
    if any(p not in ("alpha_vs_k", "micro_batch", "table12") for p in parts):
        parser.error(f"--parts: unknown part in {args.parts!r}")
    plan["ks"] = sorted(plan["ks"])
    return args, plan, parts


# ---------------------------------------------------------------------------------------------
# The model state and the measurement
# ---------------------------------------------------------------------------------------------
def trained_state(label: str, steps: int):
    """configs/quickstart.yaml's model, data and AdamW (with MoLS's param groups) after `steps`
    updates on its own schedule, built as train.py builds them (CPU, fp32)."""
    import torch

    from configs import IGNORE_INDEX
    from data import build_train_stream, get_tokenizer
    from models import loss_sum_and_count
    from mols import param_groups
    from optimizers import build_optimizer
    from optimizers.schedule import lr_factor
    from training.config import load_config
    from training.precision import prepare_model

    cfg = load_config([str(QUICKSTART)], MODELS[label])
    tokenizer = get_tokenizer(cfg.data.tokenizer)
    vocab = cfg.model.vocabulary(len(tokenizer))
    device = torch.device("cpu")
    model, _, autocast = prepare_model(cfg, vocab, device)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    t = cfg.train
    stream = build_train_stream(cfg.data, tokenizer, rank=0, world_size=1, micro_batch=t.micro_batch, vocab_limit=vocab)
    losses = []
    for step in range(steps):  # train.py's update on one rank: token-mean loss of the global batch, clip, step
        factor = lr_factor(step, total_steps=t.steps, warmup_steps=cfg.warmup_steps, min_ratio=t.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        batches = [stream.next_batch() for _ in range(t.accumulation(1))]
        targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        total = 0.0
        for batch in batches:
            with autocast():
                loss, _ = loss_sum_and_count(model, batch)
            (loss / targets).backward()
            total += float(loss.detach())
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total / targets)
    stream.close()
    info = {"overrides": MODELS[label], "parameters": sum(p.numel() for p in model.parameters()), "vocab": vocab,
            "train_steps": steps, "schedule_steps": t.steps, "warmup_steps": cfg.warmup_steps, "lr": cfg.optimizer.lr,
            "global_batch": t.global_batch, "seq_len": cfg.data.seq_len, "train_loss": losses}
    return cfg, tokenizer, vocab, model, optimizer, autocast, info


def extra_stream(cfg, tokenizer, vocab: int, micro_batch: int):
    """The stream of extra micro-batches train.py gives MoLS (an independent order, seed_offset 1)."""
    from data import build_train_stream
    return build_train_stream(cfg.data, tokenizer, rank=0, world_size=1, micro_batch=micro_batch, seed_offset=1,
                              vocab_limit=vocab)


def study_mols(model, optimizer):
    """A MoLS on the trained model with the paper's rule (reference vo, no floor) and G groups;
    its hooks never fire (no more steps are taken)."""
    from mols import MoLS
    return MoLS(model, optimizer, estimate_step=0, warmup_steps=0, reference="vo", min_alpha=None,
                uncertainty_groups=GROUPS, uncertainty_warn=None)


def summarise(mols, moments, sequences: int, snr: str) -> dict:
    """Module SNRs, alphas and their jackknife intervals from the moments folded so far, through
    the project's own code (GradientMoments, compute_alphas, MoLS's interval rule)."""
    from mols.snr import SNRMeasurement, jackknife_se

    module_snr, zero = moments.module_stats(mols.segments, mols.settings.estimator, mols.settings.zero_variance, snr)
    replicates = moments.jackknife_replicates(mols.segments, mols.settings.estimator, mols.settings.zero_variance, snr)
    alphas, ref = mols._alphas(module_snr)
    result = SNRMeasurement(module_snr, moments.count, sequences, 0.0, zero, replicates, jackknife_se(replicates),
                            GROUPS, moments.statistics_bytes())
    extra = mols._uncertainty(result, alphas)
    return {"K": moments.count, "sequences": sequences, "snr": snr, "reference": ref, "module_snr": module_snr,
            "module_snr_se": extra.get("module_snr_se", {}), "alphas": alphas, "alpha_se": extra.get("alpha_se", {}),
            "alpha_low": extra.get("alpha_low", {}), "alpha_high": extra.get("alpha_high", {}),
            "zero_variance_fraction": zero}


def measure_prefixes(model, mols, stream, ks: list[int], autocast) -> tuple[list[dict], dict]:
    """One pass over max(ks) micro-batches of `stream`, folded as measure_module_snr folds them
    (one gradient sample per micro-batch, the model's mean token loss); at every K of `ks` the
    plain and the corrected statistics of the first K samples. Also a fingerprint of the data."""
    from models import mean_loss
    from mols.snr import GradientMoments

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    moments = GradientMoments(params, "cpu", GROUPS)
    rows, sequences, token_sum, seen = [], 0, 0, set()
    start = time.perf_counter()
    for k in range(1, max(ks) + 1):
        batch = stream.next_batch()
        for p in params.values():
            p.grad = None
        with autocast():
            loss = mean_loss(model, batch)
        loss.backward()
        moments.add_current_grads()
        sequences += int(batch["input_ids"].shape[0])
        token_sum += int(batch["input_ids"].sum())
        seen.update(batch["input_ids"].unique().tolist())
        if k in ks:
            for snr in ("plain", "corrected"):
                row = summarise(mols, moments, sequences, snr)
                row["distinct_tokens"] = len(seen)
                row["seconds_so_far"] = time.perf_counter() - start
                rows.append(row)
            print(f"    K={k:4d} ({sequences} sequences): emb alpha {rows[-2]['alphas'].get('emb', float('nan')):.3f} "
                  f"plain / {rows[-1]['alphas'].get('emb', float('nan')):.3f} corrected, "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
    for p in params.values():
        p.grad = None
    return rows, {"sequences": sequences, "token_id_sum": token_sum, "distinct_tokens": len(seen)}


def calibrate_check(model, mols, stream, k: int, row: dict) -> dict:
    """MoLS.calibrate on the first k micro-batches of a fresh copy of the stream: the module SNRs
    and alpha intervals must be those of the single-pass measurement at K = k."""
    from models import mean_loss
    calibration = mols.calibrate(model, (stream.next_batch() for _ in range(k)), lambda m, b: mean_loss(m, b))
    diff = max(abs(calibration.module_snr[c] - row["module_snr"][c]) / max(abs(row["module_snr"][c]), 1e-30)
               for c in row["module_snr"])
    diff_high = max((abs(calibration.alpha_high[c] - row["alpha_high"][c]) / max(row["alpha_high"][c], 1e-30)
                     for c in row["alpha_high"]), default=0.0)
    return {"K": k, "snr": calibration.snr, "max_relative_difference_module_snr": diff,
            "max_relative_difference_alpha_high": diff_high, "gradient_samples": calibration.gradient_samples}


def part_alpha_vs_k(plan, results, save):
    results.setdefault("alpha_vs_k", {})
    results.setdefault("micro_batch", {})
    for label in plan["models"]:
        if label in results["alpha_vs_k"] and (label in results["micro_batch"] or "micro_batch" not in plan["parts"]):
            print(f"  {label}: kept from the JSON", flush=True)
            continue
        started = time.perf_counter()
        print(f"  {label}: {plan['train_steps']} AdamW steps ...", flush=True)
        cfg, tokenizer, vocab, model, optimizer, autocast, info = trained_state(label, plan["train_steps"])
        info["train_seconds"] = time.perf_counter() - started
        mols = study_mols(model, optimizer)
        if "alpha_vs_k" in plan["parts"] and label not in results["alpha_vs_k"]:
            t0 = time.perf_counter()
            stream = extra_stream(cfg, tokenizer, vocab, plan["sample_sequences"])
            rows, data = measure_prefixes(model, mols, stream, plan["ks"], autocast)
            stream.close()
            check_stream = extra_stream(cfg, tokenizer, vocab, plan["sample_sequences"])
            smallest = next(r for r in rows if r["K"] == plan["ks"][0] and r["snr"] == "plain")
            check = calibrate_check(model, mols, check_stream, plan["ks"][0], smallest)
            check_stream.close()
            print(f"    MoLS.calibrate at K={check['K']}: relative difference {check['max_relative_difference_module_snr']:.2g}",
                  flush=True)
            results["alpha_vs_k"][label] = {"model": info, "sample_sequences": plan["sample_sequences"],
                                            "groups": GROUPS, "rows": rows, "data": data, "calibrate_check": check,
                                            "seconds": time.perf_counter() - t0 + info["train_seconds"]}
            save()
        if "micro_batch" in plan["parts"] and label not in results["micro_batch"]:
            t0 = time.perf_counter()
            rows = []
            for size in plan["mb_sizes"]:
                k = plan["mb_sequences"] // size
                print(f"    micro-batch {size}: K={k}", flush=True)
                stream = extra_stream(cfg, tokenizer, vocab, size)
                measured, data = measure_prefixes(model, mols, stream, [k], autocast)
                stream.close()
                for row in measured:
                    rows.append({"micro_batch": size, **row, "data": data})
            results["micro_batch"][label] = {"model": info, "sequences": plan["mb_sequences"], "groups": GROUPS,
                                             "rows": rows, "seconds": time.perf_counter() - t0}
            save()
        del model, optimizer, mols


# ---------------------------------------------------------------------------------------------
# Table 12 in miniature
# ---------------------------------------------------------------------------------------------
def part_table12(plan, results, out_dir: Path, threads: int, resume: bool, save):
    table = results.setdefault("table12", {"runs": []})
    done = {r["name"]: r for r in table["runs"]} if resume else {}
    table["runs"] = []
    table["settings"] = {"config": "configs/quickstart.yaml", "seeds": plan["seeds"], "set": plan["table12_set"]}
    settings = [(f"mols-n{n}", ["mols.enabled=true", f"mols.samples={n}"], n) for n in plan["table12_samples"]]
    if plan["baseline"]:
        settings.append(("adamw", ["mols.enabled=false"], None))
    runs_dir = out_dir / "table12"
    # every MoLS run first, seed by seed; the AdamW reference runs last (the first to drop when short of time)
    order = [(seed, s) for seed in plan["seeds"] for s in settings if s[2] is not None]
    order += [(seed, s) for seed in plan["seeds"] for s in settings if s[2] is None]
    for seed, (setting, overrides, samples) in order:
        name = f"{setting}-seed{seed}"
        summary_path = runs_dir / name / "summary.json"
        sets = [f"run.out_dir={runs_dir}", f"run.name={name}", f"run.seed={seed}", f"data.shuffle_seed={42 + seed}",
                f"train.threads={threads}", *overrides, *plan["table12_set"]]
        command = [sys.executable, str(ROOT / "train.py"), "--config", str(QUICKSTART)]
        for item in sets:
            command += ["--set", item]
        if name in done and summary_path.exists():
            table["runs"].append(done[name])
            continue
        if summary_path.exists() or (runs_dir / name).exists():
            shutil.rmtree(runs_dir / name)
        print(f"  {name}: {shlex.join(command[1:])}", flush=True)
        t0 = time.perf_counter()
        log_path = runs_dir / f"{name}.log"
        runs_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if code:
            raise SystemExit(f"{name}: train.py exited with {code}; see {log_path}")
        summary = json.loads(summary_path.read_text())
        run = {"name": name, "setting": setting, "seed": seed, "samples": samples,
               "command": "python " + shlex.join([str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                                  for c in command[1:]]),
               "final_val_loss": summary["final_val_loss"], "final_val_ppl": summary["final_val_ppl"],
               "wall_time_s": summary["wall_time_s"], "seconds": time.perf_counter() - t0}
        mols_json = runs_dir / name / "mols.json"
        if mols_json.exists():
            calibration = json.loads(mols_json.read_text())["calibrations"][0]
            for key in ("gradient_samples", "sequences", "module_snr", "module_snr_se", "alphas", "alpha_low",
                        "alpha_high", "seconds", "step"):
                run["calibration_" + key] = calibration.get(key)
        print(f"    val loss {run['final_val_loss']:.4f} ({run['seconds'] / 60:.1f} min)", flush=True)
        table["runs"].append(run)
        summarise_table12(table)
        save()
    summarise_table12(table)
    save()


def summarise_table12(table: dict) -> None:
    """Per setting: the final validation losses, their mean and sd over seeds, the paired
    difference to AdamW on the same seed, and the calibrations' K and mean alphas."""
    summary = {}
    settings = list(dict.fromkeys(r["setting"] for r in table["runs"]))
    settings.sort(key=lambda s: (s == "adamw", s))
    for setting in settings:
        runs = [r for r in table["runs"] if r["setting"] == setting]
        losses = [r["final_val_loss"] for r in runs]
        mean = sum(losses) / len(losses)
        sd = (sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)) ** 0.5 if len(losses) > 1 else 0.0
        entry = {"samples": runs[0]["samples"], "seeds": [r["seed"] for r in runs], "val_loss": losses, "mean": mean,
                 "sd": sd, "min": min(losses), "max": max(losses)}
        cal = [r for r in runs if r.get("calibration_alphas")]
        if cal:
            entry["K"] = cal[0]["calibration_gradient_samples"]
            entry["alphas_mean"] = {c: sum(r["calibration_alphas"][c] for r in cal) / len(cal)
                                    for c in cal[0]["calibration_alphas"]}
        baseline = {r["seed"]: r["final_val_loss"] for r in table["runs"] if r["setting"] == "adamw"}
        if setting != "adamw" and baseline:
            entry["minus_adamw"] = [r["final_val_loss"] - baseline[r["seed"]] for r in runs if r["seed"] in baseline]
        summary[setting] = entry
    table["summary"] = summary


# ---------------------------------------------------------------------------------------------
# Tables and the plot
# ---------------------------------------------------------------------------------------------
def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.1:
        return f"{x:.3f}"
    return f"{x:.3g}"


def alpha_cell(row: dict, cls: str) -> str:
    alpha = row["alphas"].get(cls)
    if alpha is None:
        return "-"
    if cls in row["alpha_low"]:
        return f"{fmt(alpha)} [{fmt(row['alpha_low'][cls])}, {fmt(row['alpha_high'][cls])}]"
    return fmt(alpha)


def snr_cell(row: dict, cls: str) -> str:
    value = row["module_snr"].get(cls)
    if value is None:
        return "-"
    se = row["module_snr_se"].get(cls)
    return f"{fmt(value)} ± {fmt(se)}" if se is not None else fmt(value)


def tables(results: dict) -> str:
    out = []
    for label, part in results.get("alpha_vs_k", {}).items():
        m = part["model"]
        for snr in ("plain", "corrected"):
            out.append(f"**{label}** ({m['parameters'] / 1e6:.1f}M parameters, after {m['train_steps']} AdamW steps), "
                       f"`snr: {snr}`, K micro-batches of {part['sample_sequences']} sequences; alpha [95% interval], "
                       f"reference vo, no floor:\n")
            out.append("| K (sequences) | emb SNR ± se | emb zero-var | emb alpha | qk alpha | mlp alpha | head SNR ± se | vo SNR |")
            out.append("|---|---|---|---|---|---|---|---|")
            for row in part["rows"]:
                if row["snr"] != snr:
                    continue
                zero = row["zero_variance_fraction"].get("emb", 0.0)
                out.append(f"| {row['K']} ({row['sequences']:,}) | {snr_cell(row, 'emb')} | {100 * zero:.0f}% | "
                           f"{alpha_cell(row, 'emb')} | {alpha_cell(row, 'qk')} | {alpha_cell(row, 'mlp')} | "
                           f"{snr_cell(row, 'head')} | {fmt(row['module_snr'].get('vo'))} |")
            out.append("")
    for label, part in results.get("micro_batch", {}).items():
        out.append(f"**{label}**, {part['sequences']} sequences as K micro-batches of b sequences; alpha [95% interval]:\n")
        out.append("| b | K | snr | emb SNR | emb alpha | qk alpha | mlp alpha | head SNR |")
        out.append("|---|---|---|---|---|---|---|---|")
        for row in part["rows"]:
            out.append(f"| {row['micro_batch']} | {row['K']} | {row['snr']} | {fmt(row['module_snr'].get('emb'))} | "
                       f"{alpha_cell(row, 'emb')} | {alpha_cell(row, 'qk')} | {alpha_cell(row, 'mlp')} | "
                       f"{fmt(row['module_snr'].get('head'))} |")
        out.append("")
    table = results.get("table12")
    if table and table.get("summary"):
        out.append("Table 12 in miniature (configs/quickstart.yaml, AdamW+MoLS as `make quickstart` runs it; "
                   "final validation loss per seed):\n")
        seeds = table["settings"]["seeds"]
        out.append("| setting | K | " + " | ".join(f"seed {s}" for s in seeds)
                   + " | mean ± sd | minus AdamW (per seed) | emb / qk / mlp alpha (mean) |")
        out.append("|---|---|" + "---|" * len(seeds) + "---|---|---|")
        for setting, entry in table["summary"].items():
            by_seed = {r["seed"]: r["final_val_loss"] for r in table["runs"] if r["setting"] == setting}
            alphas = entry.get("alphas_mean", {})
            label = f"MoLS, mols.samples {entry['samples']}" if entry["samples"] else "AdamW (no MoLS)"
            minus = ", ".join(f"{d:+.4f}" for d in entry.get("minus_adamw", [])) or "-"
            shown = " / ".join(fmt(alphas[c]) for c in SCALED_SHOWN if c in alphas) or "-"
            out.append(f"| {label} | {entry.get('K', '-')} | "
                       + " | ".join(f"{by_seed[s]:.4f}" if s in by_seed else "-" for s in seeds)
                       + (f" | {entry['mean']:.4f} ± {entry['sd']:.4f}" if len(entry["val_loss"]) > 1 else " | (1 seed)")
                       + f" | {minus} | {shown} |")
        out.append("")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    parts = results.get("alpha_vs_k", {})
    if not parts:
        return
    fig, axes = plt.subplots(1, len(parts), figsize=(6.2 * len(parts), 4.6), squeeze=False)
    colors = {"emb": "tab:red", "qk": "tab:blue", "mlp": "tab:green", "head": "tab:purple"}
    for ax, (label, part) in zip(axes[0], parts.items()):
        for snr, style, shift in (("plain", "-o", 0.97), ("corrected", "--s", 1.03)):
            rows = [r for r in part["rows"] if r["snr"] == snr]
            for cls in ("emb", "qk", "mlp"):
                ks = [r["K"] * shift for r in rows if cls in r["alphas"]]
                alphas = [r["alphas"][cls] for r in rows if cls in r["alphas"]]
                low = [r["alphas"][cls] - r["alpha_low"].get(cls, r["alphas"][cls]) for r in rows if cls in r["alphas"]]
                high = [r["alpha_high"].get(cls, r["alphas"][cls]) - r["alphas"][cls] for r in rows if cls in r["alphas"]]
                ax.errorbar(ks, alphas, yerr=[low, high], fmt=style, color=colors[cls], capsize=3, markersize=4,
                            label=f"{cls} ({snr})", alpha=1.0 if snr == "plain" else 0.75)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ks = sorted({r["K"] for r in part["rows"]})
        ax.set_xticks(ks, [f"{k}\n({k * part['sample_sequences']:,})" for k in ks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel(f"K gradient samples of {part['sample_sequences']} sequences (sequences)")
        ax.set_ylabel("alpha = sqrt(SNR_vo / SNR_module)")
        ax.set_title(f"{label} ({part['model']['parameters'] / 1e6:.1f}M), after {part['model']['train_steps']} steps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("MoLS alpha vs K, 95% jackknife intervals (4 groups); one model state, one sample stream")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args, plan, parts = parse_args(argv)
    plan["parts"] = parts
    out_dir = Path(args.out_dir).resolve()
    json_path = out_dir / "calibration_study.json"
    plot_path = Path(args.plot) if args.plot else (out_dir / "calibration_alpha_vs_k.png" if args.quick
                                                   else ROOT / "docs" / "calibration_alpha_vs_k.png")
    results = json.loads(json_path.read_text()) if (args.resume or args.tables_only) and json_path.exists() else {}

    def save():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, json_path)

    if not args.tables_only:
        os.environ.setdefault("WANDB_MODE", "disabled")
        import torch
        torch.set_num_threads(args.threads)
        meta = results.setdefault("meta", {})
        command = "python scripts/calibration_study.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        meta.update({"command": command, "plan": plan, "machine": f"{platform.machine()}, {os.cpu_count()} CPU "
                     f"cores, torch threads {args.threads}", "python": platform.python_version(),
                     "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        meta.setdefault("invocations", []).append({"command": command, "parts": parts, "started": meta["started"]})
        meta.setdefault("seconds", {})
        for part in ("alpha_vs_k", "table12"):
            if part == "alpha_vs_k" and not ({"alpha_vs_k", "micro_batch"} & set(parts)):
                continue
            if part == "table12" and "table12" not in parts:
                continue
            print(f"== {part if part == 'table12' else 'alpha_vs_k / micro_batch'}", flush=True)
            t0 = time.perf_counter()
            if part == "alpha_vs_k":
                part_alpha_vs_k(plan, results, save)
            else:
                part_table12(plan, results, out_dir, args.threads, args.resume, save)
            meta["seconds"][part] = meta["seconds"].get(part, 0.0) * bool(args.resume) + time.perf_counter() - t0
            save()
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        save()
    if results.get("table12", {}).get("runs"):
        summarise_table12(results["table12"])
    text = tables(results)
    (out_dir / "calibration_tables.md").write_text(text + "\n")
    plot(results, plot_path)
    print(text)
    print(f"\nwrote {json_path}, {out_dir / 'calibration_tables.md'} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

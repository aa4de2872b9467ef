"""MoLS: module-wise learning-rate scaling via gradient SNR, usable from any PyTorch training loop.

    from mols import MoLS, param_groups
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3, betas=(0.9, 0.95))
    mols = MoLS(model, optimizer, estimate_step=100, warmup_steps=1000)
    ...
    if mols.calibration_due(step):
        print(mols.calibrate(model, extra_batches).table())

groups.py maps parameters to module classes, snr.py measures module SNRs, scaling.py turns them
into learning-rate multipliers and applies them through optimizer step hooks. `mols.hf_trainer`
(imported on its own: it needs transformers) adds MoLS to a transformers.Trainer.
"""
from mols.groups import CLASSES, GROUPINGS, Segment, adapted_name, classify, count_by_class, param_groups
from mols.scaling import Calibration, MoLS, compute_alphas, resolve_reference
from mols.snr import GradientMoments, MeasurementInterrupted, SNRMeasurement, measure_module_snr

__all__ = ["CLASSES", "GROUPINGS", "Segment", "adapted_name", "classify", "count_by_class", "param_groups",
           "Calibration", "MoLS", "compute_alphas", "resolve_reference",
           "GradientMoments", "MeasurementInterrupted", "SNRMeasurement", "measure_module_snr"]

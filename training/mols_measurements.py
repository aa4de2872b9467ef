"""MoLS's extra forward/backward passes between two updates: the calibration and the SNR tracking.

    measurements = MoLSMeasurements(mols, ddp_model, stream, device=..., world_size=..., ...)
    for kind, values in measurements.before_update(step):   # what is due now, run now
        log.log(kind, step, values, console=False)

The batches come from MoLS's own data stream (an order independent of training's, `seed_offset`
1), micro-batch by micro-batch on every rank alike; the loss is the training loss, autocast
around the forward only. A stop signal ends a measurement within one gradient sample: the stream
is put back where the measurement began and mols.MeasurementInterrupted is raised, so the resumed
run measures the same samples an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from configs import write_json_atomic
from models import mean_loss
from mols import MeasurementInterrupted
from training.evaluation import to_device


class MoLSMeasurements:
    def __init__(self, mols, model: torch.nn.Module, stream, *, device: torch.device, world_size: int,
                 autocast: Callable, stops, run_dir: Path, is_main: bool, say: Callable[[str], None]):
        self.mols, self.model, self.stream = mols, model, stream
        self.device, self.world_size, self.autocast, self.stops = device, world_size, autocast, stops
        self.run_dir, self.is_main, self.say = run_dir, is_main, say

    def before_update(self, step: int) -> list[tuple[str, dict]]:
        """The calibration and the SNR tracking due before update `step`, run now: the records they
        leave for the log, (kind, values) in order. The calibration's table is said on the way and
        mols.json rewritten."""
        calibrate, track = self.mols.calibration_due(step), self.mols.tracking_due(step)
        if not (calibrate or track):
            return []
        position = self.stream.state_dict()
        records = []
        try:
            if calibrate:
                calibration = self._calibrate(step)
                records.append(("mols_calibration", {k: v for k, v in vars(calibration).items() if k != "step"}))
            if track:
                measured = self.mols.measure(self.model, self._batches("track"), self._loss, should_stop=self._stop)
                records.append(("snr", {"module_snr": measured.module_snr, "seconds": measured.seconds}))
        except MeasurementInterrupted:
            self.stream.load_state_dict(position)
            raise
        return records

    def _calibrate(self, step: int):
        per_draw = self.stream.micro_batch * self.world_size  # one gradient sample of all ranks
        measured = self.mols.draws("calibrate", per_draw) * per_draw
        if self.mols.settings.samples < per_draw:
            self.say(f"warning: mols.samples {self.mols.settings.samples:,} is less than one gradient sample of all "
                     f"ranks ({self.world_size} x {per_draw // self.world_size} sequences) and a variance needs two: "
                     f"the calibration measures {measured:,} sequences")
        self.say(f"MoLS calibration at step {step}: {measured:,} sequences ...")
        calibration = self.mols.calibrate(self.model, self._batches("calibrate"), self._loss, should_stop=self._stop)
        self.say(calibration.table())
        if self.is_main:
            write_json_atomic(self.run_dir / "mols.json", self.mols.state_dict())
        return calibration

    def _batches(self, what: str) -> Iterator[dict]:
        """Every rank draws the same number of extra batches."""
        for _ in range(self.mols.draws(what, self.stream.micro_batch * self.world_size)):
            yield to_device(self.stream.next_batch(), self.device)

    def _loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        with self.autocast():
            return mean_loss(model, batch)

    def _stop(self) -> bool:
        return self.stops.agreed(self.device)

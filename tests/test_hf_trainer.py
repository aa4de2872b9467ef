"""MoLS inside transformers.Trainer (mols/hf_trainer.py): the grouped optimizer, the calibration at
its step from extra training batches, the scaled learning rates under the Trainer's own scheduler,
LoRA, and resuming from a Trainer checkpoint. Tiny models, CPU, offline."""
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Trainer, TrainerCallback, TrainingArguments

from data.instructions import collate, shipped_synthetic, tokenize_records
from models.pretrained import apply_lora
from mols.hf_trainer import STATE_FILE, MoLSCallback, MoLSTrainer, grouped_parameters, mols_optimizer

TOKENIZER = "tests/assets/tokenizer"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def dataset(tokenizer):
    return tokenize_records(shipped_synthetic("train")[:64], tokenizer, cutoff_len=128).examples


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=2000, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=2, num_hidden_layers=2, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")


def arguments(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=4, learning_rate=1e-3,
                    warmup_steps=0.5, lr_scheduler_type="cosine", weight_decay=0.1, logging_steps=5,
                    save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                    dataloader_num_workers=0)
    settings.update(overrides)
    return TrainingArguments(**settings)


class Observer(TrainerCallback):
    """Records, for every update, the lr each group has inside optimizer.step() (after MoLS scaled
    it) and the scheduler's lr at that step."""

    def __init__(self):
        self.inside, self.scheduled = {}, {}

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        self._state = state
        inner.register_step_pre_hook(lambda opt, a, k: self.inside.__setitem__(
            self._state.global_step, [(g["module_class"], g["lr"]) for g in opt.param_groups]))

    def on_pre_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
        self.scheduled[state.global_step] = list(lr_scheduler.get_last_lr())


def collator(tokenizer):
    return lambda examples: collate(examples, tokenizer.pad_token_id, attention_mask=True)


def test_grouped_optimizer_keeps_the_trainer_weight_decay_split(tmp_path):
    model = tiny_llama()
    args = arguments(tmp_path)
    optimizer = mols_optimizer(model, args)
    assert type(optimizer) is torch.optim.AdamW
    decay = set(Trainer.get_decay_parameter_names(None, model))
    covered = []
    for group in optimizer.param_groups:
        assert group["module_class"] in {"emb", "head", "qk", "vo", "mlp", "other"}
        for name in group["names"]:
            assert group["weight_decay"] == (0.1 if name in decay else 0.0)
        covered += group["names"]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    assert {g["module_class"] for g in optimizer.param_groups if g["weight_decay"] == 0} == {"other"}
    assert len(grouped_parameters(model)) == 6


def test_trainer_with_mols_scales_learning_rates_and_keeps_the_scheduler(tmp_path, tokenizer, dataset):
    model = tiny_llama()
    args = arguments(tmp_path)
    mols = MoLSCallback(samples=32, estimate_step=2, uncertainty_groups=0, verbose=False)
    observer = Observer()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator(tokenizer),
                      optimizers=(mols_optimizer(model, args), None), callbacks=[mols, observer])
    trainer.train()
    calibration = mols.calibration
    assert calibration is not None and calibration.step == 2
    assert calibration.gradient_samples == 8 and calibration.sequences == 32   # 32 samples / micro-batch 4
    alphas = calibration.alphas
    assert alphas["vo"] == 1.0 and any(abs(alphas[c] - 1) > 1e-3 for c in ("emb", "head", "qk", "mlp"))
    warmup = args.get_warmup_steps(20)
    assert warmup == 10
    for step in range(20):
        scheduled = observer.scheduled[step]
        assert len(set(scheduled)) == 1                                       # one schedule for all groups
        base = scheduled[0]
        if step < 2:
            factor = {c: 1.0 for c in alphas}
        else:                                                                 # ramp to alpha over the warm-up
            fraction = min(1.0, (step - 2 + 1) / (warmup - 2))
            factor = {c: 1 + (alphas[c] - 1) * fraction for c in alphas}
        for cls, lr in observer.inside[step]:
            assert lr == pytest.approx(base * factor[cls], rel=1e-12), (step, cls)
    # the scheduler is the Trainer's cosine with warm-up, untouched: after the run every group's lr
    # is the schedule's, unscaled
    final = trainer.lr_scheduler.get_last_lr()
    expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * (20 - warmup) / (20 - warmup)))
    assert all(lr == pytest.approx(expected, abs=1e-15) for lr in final)
    inner = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert [g["lr"] for g in inner.param_groups] == final
    assert observer.scheduled[15][0] == pytest.approx(
        1e-3 * 0.5 * (1 + math.cos(math.pi * (15 - warmup) / (20 - warmup))), rel=1e-12)


def test_mols_trainer_on_lora_resumes_its_multipliers_from_a_checkpoint(tmp_path, tokenizer, dataset):
    def run(resume=None, max_steps=8):
        model = apply_lora(tiny_llama(), rank=4, seed=0)
        args = arguments(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=4, warmup_steps=6,
                         weight_decay=0.0)
        callback = MoLSCallback(samples=16, estimate_step=1, uncertainty_groups=0, verbose=False)
        trainer = MoLSTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator(tokenizer),
                              mols=callback)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, callback

    trainer, callback = run()
    assert (tmp_path / "checkpoint-4" / STATE_FILE).is_file()
    assert set(callback.calibration.alphas) == {"qk", "vo", "mlp"}                # adapters only
    classes = {g["module_class"] for g in trainer.optimizer.param_groups}
    assert classes == {"qk", "vo", "mlp"}
    final = callback.multipliers()
    assert final == callback.calibration.alphas                                  # ramp done at step 6
    _, resumed = run(resume=str(tmp_path / "checkpoint-4"))
    assert resumed.calibration.step == 1 and resumed.calibration.alphas == callback.calibration.alphas
    assert resumed.multipliers() == final

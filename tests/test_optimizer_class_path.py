"""`optimizer.name: module.ClassName`: a torch Optimizer defined outside the package, in a file the
test writes (on sys.path as PYTHONPATH would put it, or in the working directory), trains through
train.py with MoLS, resumes exactly, is priced by the dry run (measured after one step), named in
sweeps and results, refused under FSDP; its bad settings are config errors, all at once, exit 2."""
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import train
from configs import ConfigError
from models import build_model
from mols.groups import param_groups
from optimizers import OptimizerConfig, build_optimizer, estimate_state_bytes, optimizer_state_bytes
from training.config import validate
from test_train import run_train, straight_and_resumed

ROOT = Path(__file__).resolve().parents[1]
# Heavy-ball momentum on the sign of the gradient, with a per-parameter step counter and a tuple
# option: tensors, an int and a tuple in its state and groups, as a researcher's optimizer keeps them.
SIGN_MOMENTUM = '''
import torch


class SignMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0, damping=(1.0, 0.5)):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, damping=damping))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["steps"] = 0
                    state["buffer"] = torch.zeros_like(p)
                state["steps"] += 1
                first, later = group["damping"]
                damping = first if state["steps"] == 1 else later
                state["buffer"].mul_(group["momentum"]).add_(p.grad.sign(), alpha=damping)
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(state["buffer"], alpha=-group["lr"])


def not_an_optimizer(params):
    return None
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(name, code): a module file in its own folder, put on sys.path (as PYTHONPATH would);
    forgotten again after the test."""
    written = []

    def write(name: str, code: str, on_path: bool = True) -> Path:
        folder = tmp_path / f"user_{name}"
        folder.mkdir()
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
        if on_path:
            monkeypatch.syspath_prepend(str(folder))
        written.append(name)
        return folder

    monkeypatch.setattr(sys, "path", list(sys.path))  # the working directory appended by a test goes again
    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_an_optimizer_of_your_own_trains_with_mols_and_resumes_exactly(tmp_path, user_module, capsys):
    user_module("sign_momentum", SIGN_MOMENTUM)
    common = ["optimizer.name=sign_momentum.SignMomentum", "optimizer.lr=2e-3",
              "optimizer.options={momentum: 0.8, damping: [1.0, 0.25]}",
              "train.steps=12", "train.checkpoint_every=6", "train.eval_every=6", "mols.enabled=true",
              "mols.estimate_at=2", "train.warmup_steps=8"]  # the MoLS ramp spans the interruption
    straight, resumed = straight_and_resumed(tmp_path, *common, last_step=12)  # killed after step 6's
    out = capsys.readouterr().out
    assert "optimizer sign_momentum.SignMomentum (SignMomentum)" in out and "base_lr 0.002" in out
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    saved = straight["optimizer"]
    assert saved["method"] == "sign_momentum.SignMomentum" and saved["class"] == "SignMomentum"
    state = saved["state_dict"]["state"][0]
    assert state["steps"] == 12 and state["buffer"].dtype == torch.float32
    groups = saved["state_dict"]["param_groups"]
    assert groups[0]["damping"] == (1.0, 0.25) and groups[0]["momentum"] == 0.8 and "module_class" in groups[0]
    # MoLS scaled its groups: the calibration's alphas and the multipliers the checkpoint carries
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    (calibration,) = [r for r in records if r["kind"] == "mols_calibration"]
    assert any(alpha != 1.0 for alpha in calibration["alphas"].values())
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["optimizer"] == "sign_momentum.SignMomentum" and summary["optimizer_state_bytes"] > 0
    assert straight["mols"]["ramp"] == resumed["mols"]["ramp"]


def test_the_dry_run_measures_its_state_and_fsdp_refuses_it(tmp_path, user_module, capsys):
    user_module("sign_momentum_dry", SIGN_MOMENTUM)
    name = "sign_momentum_dry.SignMomentum"
    config = ["--config", str(ROOT / "configs" / "paper" / "base.yaml"), "--config",
              str(ROOT / "configs" / "paper" / "models" / "llama_60m.yaml"), "--set", f"optimizer.name={name}"]
    assert train.main([*config, "--dry-run", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "optimizer state" in out and "(measured after one step on a stand-in)" in out
    # one bf16 (bf16-pure) buffer per parameter, as measured on a stand-in cut to 256 per side
    with torch.device("meta"):
        model = build_model("llama_60m", vocab_size=32000)
    params = sum(p.numel() for p in model.parameters())
    assert estimate_state_bytes(OptimizerConfig(name=name), model, torch.bfloat16) == 2 * params
    # and on a model small enough to be its own stand-in, the bytes it holds after one step
    small = build_model("llama_micro", vocab_size=256)
    cfg = OptimizerConfig(name=name)
    optimizer = build_optimizer(cfg, small, param_groups(small))
    for param in small.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    assert estimate_state_bytes(cfg, small) == optimizer_state_bytes(optimizer) == 4 * sum(
        p.numel() for p in small.parameters())

    assert train.main([*config, "--set", "train.parallel=fsdp", "--dry-run", "--gpus", "8"]) == 2
    err = capsys.readouterr().err
    assert f"train.parallel: fsdp does not run optimizer '{name}'" in err and "class of your own" in err
    assert "Traceback" not in err


def test_bad_settings_are_config_errors_named_all_at_once(tmp_path, user_module, capsys):
    user_module("sign_momentum_bad", SIGN_MOMENTUM)
    user_module("broken_module", "import torch\nraise RuntimeError('half-written idea')\n")
    name = "sign_momentum_bad.SignMomentum"

    def problems(optimizer: dict) -> list[str]:
        with pytest.raises(ConfigError) as err:
            validate({"optimizer": optimizer})
        return err.value.problems

    found = problems({"name": name, "options": {"momentun": 0.9, "damping": "lots", "momentum": "high",
                                                 "eps": 1e-6, "lr": 1e-3, "betas": [0.9, 0.99]}})
    assert len(found) == 6, found
    text = "\n".join(found)
    assert "optimizer.options.momentun: SignMomentum takes no such argument (did you mean 'momentum'?)" in text
    assert "optimizer.options.momentum: expected a number, got 'high'" in text
    assert "optimizer.options.lr: set optimizer.lr instead (it is passed to SignMomentum as lr)" in text
    assert "optimizer.options.eps: SignMomentum takes no such argument (it takes: momentum, damping)" in text
    assert "optimizer.options.betas: SignMomentum takes no such argument" in text
    assert "optimizer.options.damping: expected a list, got 'lots'" in text  # its default is a tuple
    # weight_decay is one of the optimizer section's: optimizer.weight_decay reaches it
    (problem,) = problems({"name": name, "options": {"weight_decay": 0.1}})
    assert problem == ("optimizer.options.weight_decay: set optimizer.weight_decay instead (it is passed to "
                       "SignMomentum as weight_decay)")
    # YAML's 1e-3 (a string to PyYAML) is a number for a float option; a list is the tuple it stands for
    assert validate({"optimizer": {"name": name, "options": {"momentum": "9e-1", "damping": [1.0, 1.0]}}})

    (problem,) = problems({"name": "no_such_module.Adam"})
    assert "cannot import no_such_module (ModuleNotFoundError" in problem and "PYTHONPATH" in problem
    (problem,) = problems({"name": "broken_module.Idea"})
    assert "cannot import broken_module (RuntimeError: half-written idea); the error is in that module" in problem
    (problem,) = problems({"name": "sign_momentum_bad.SignMomentun"})
    assert "has no 'SignMomentun' (did you mean 'SignMomentum'?)" in problem
    (problem,) = problems({"name": "sign_momentum_bad.not_an_optimizer"})
    assert "is a function, not a torch.optim.Optimizer subclass" in problem
    (problem,) = problems({"name": "torch.optim.SGD", "options": {"momentum": 0.9, "nesterov": "yes"}})
    assert "optimizer.options.nesterov: expected true or false, got 'yes'" in problem

    # through train.py: exit 2, every problem, no traceback, nothing written
    code = run_train(tmp_path, f"optimizer.name={name}", "optimizer.options={momentun: 0.9, eps: 1.0}")
    err = capsys.readouterr().err
    assert code == 2 and "configuration error (2 problems)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_class_refuses_its_arguments_as_a_config_error(user_module):
    user_module("picky", '''
        import torch

        class Picky(torch.optim.SGD):
            def __init__(self, params, lr=1e-3, momentum=0.0):
                if momentum > 0.5:
                    raise ValueError("momentum above 0.5 is not an idea I had")
                super().__init__(params, lr=lr, momentum=momentum)
    ''')
    model = build_model("llama_micro", vocab_size=256)
    cfg = OptimizerConfig(name="picky.Picky", options={"momentum": 0.9})
    with pytest.raises(ConfigError, match="picky.Picky refused its arguments .*momentum above 0.5"):
        build_optimizer(cfg, model, param_groups(model))


def test_a_file_in_the_working_directory_is_found(tmp_path, user_module, monkeypatch):
    folder = user_module("in_working_directory", SIGN_MOMENTUM, on_path=False)
    assert OptimizerConfig(name="in_working_directory.SignMomentum").validate()[0].startswith(
        "optimizer.name: cannot import in_working_directory")
    monkeypatch.chdir(folder)
    assert OptimizerConfig(name="in_working_directory.SignMomentum").validate() == []


def test_sweeps_take_a_class_path_or_a_registered_name_without_an_overlay():
    from reproduce.jobs import Variant, build_jobs

    jobs = build_jobs(name="mine", models=["llama_tiny"], variants=[Variant.parse("my_optimizer.Idea+mols"),
                                                                   Variant.parse("adamw")],
                      lrs=[1e-3], seeds=[0], out_dir="runs", base=ROOT / "configs" / "quickstart.yaml")
    mine, adamw = jobs
    assert mine.configs == ["configs/quickstart.yaml", "configs/paper/mols.yaml"]
    assert "optimizer.name=my_optimizer.Idea" in mine.overrides
    assert mine.run_name == "llama_tiny-my_optimizer.Idea-mols-lr1.0e-03-s0"
    assert adamw.configs == ["configs/quickstart.yaml"] and "optimizer.name=adamw" in adamw.overrides
    with pytest.raises(ValueError, match="neither a registered method .* nor a class path"):
        build_jobs(name="x", models=["llama_tiny"], variants=[Variant("sgd", False)], lrs=[1e-3], seeds=[0],
                   out_dir="runs")

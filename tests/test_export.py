"""Around a finished run: scripts/export_hf.py (a directory transformers loads on its own),
scripts/generate.py and scripts/evaluate.py (the run's final validation loss, exactly, and no other
change to the run directory), on tiny LLaMA, GPT-2 and Qwen2 runs trained here."""
import json
from pathlib import Path

import pytest
import torch

import train
from data import get_tokenizer
from models import build_model
from scripts import evaluate, export_hf, generate
from training import checkpoint

SIZES = ["llama_micro", "gpt2_micro", "qwen2_micro"]
ASSETS = Path(__file__).resolve().parent / "assets"
TOKENIZER = str(ASSETS / "tokenizer")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("runs")
    for size in SIZES:
        status = train.main(["--config", "configs/quickstart.yaml", "--set", f"model.size={size}",
                             "--set", "data.source=local", "--set", f"data.path={ASSETS / 'train.jsonl'}",
                             "--set", f"data.val_path={ASSETS / 'val.jsonl'}", "--set", "data.num_workers=0",
                             "--set", f"data.tokenizer={TOKENIZER}", "--set", "data.seq_len=32",
                             "--set", "data.val_tokens=4000", "--set", "train.global_batch=8",
                             "--set", "train.micro_batch=4", "--set", "train.steps=4", "--set", "train.threads=1",
                             "--set", f"run.out_dir={out_dir}", "--set", f"run.name={size}"])
        assert status == 0
    return {size: out_dir / size for size in SIZES}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    for size, run_dir in runs.items():
        assert export_hf.main([str(run_dir), str(root / size)]) == 0
    return {size: root / size for size in SIZES}


def checkpoint_model(run_dir):
    """The training model of the run's final checkpoint, built as train.py builds it."""
    state = checkpoint.load(checkpoint.latest_checkpoint(run_dir / "checkpoints"))
    rows = state["model"][next(k for k in state["model"] if k.endswith(("embed_tokens.weight", "wte.weight")))]
    model = build_model(state["config"]["model"]["size"], rows.shape[0])
    model.load_state_dict(state["model"])
    return model.eval()


@pytest.mark.parametrize("size", SIZES)
def test_export_loads_with_transformers_alone_and_gives_the_training_logits(size, runs, exported):
    from transformers import AutoModelForCausalLM

    out = exported[size]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.use_cache is True
    reference = checkpoint_model(runs[size])
    ids = torch.randint(0, reference.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = reference(input_ids=ids).logits, model(input_ids=ids).logits
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_export_special_token_ids_are_the_tokenizers(size, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    run_tokenizer = get_tokenizer(TOKENIZER)
    expected = {"bos_token_id": run_tokenizer.bos_token_id, "eos_token_id": run_tokenizer.eos_token_id,
                "pad_token_id": run_tokenizer.pad_token_id}
    assert expected == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}  # the embedded BPE's
    tokenizer = AutoTokenizer.from_pretrained(exported[size])
    assert {k: getattr(tokenizer, k) for k in expected} == expected
    config = AutoModelForCausalLM.from_pretrained(exported[size]).config
    generation = GenerationConfig.from_pretrained(exported[size])
    for key, value in expected.items():
        assert getattr(config, key) == value and getattr(generation, key) == value
    text = "The river flows north."
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == \
        run_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_generate_from_export_run_and_checkpoint(runs, exported, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported["llama_micro"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported["llama_micro"])
    prompt_ids, new_ids = generate.generate(model, tokenizer, "The history of", max_new_tokens=6, seed=1)
    assert len(prompt_ids) > 0 and 1 <= len(new_ids) <= 6
    assert all(0 <= i < model.config.vocab_size for i in new_ids)

    ckpt = checkpoint.latest_checkpoint(runs["gpt2_micro"] / "checkpoints")
    outputs = []
    for source in (exported["gpt2_micro"], runs["gpt2_micro"], ckpt):
        args = [str(source), "--prompt", "The history of", "--max-new-tokens", "5", "--seed", "3"]
        assert generate.main(args) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0].startswith("The history of") and len(outputs[0]) > len("The history of\n")
    assert outputs[0] == outputs[1] == outputs[2]  # the same model, whichever way it is loaded
    assert generate.main([str(runs["qwen2_micro"]), "--temperature", "0", "--max-new-tokens", "4"]) == 0


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_generate_reads_a_finetuning_run_as_export_does(exported, lora_rank, tmp_path, capsys):
    """configs/finetune_demo.yaml on an exported run, fully or with LoRA: generate.py reads the
    fine-tuning run (the pretrained model with its trained weights, LoRA merged) and samples the
    same text as from that run's export."""
    status = train.main(["--config", "configs/finetune_demo.yaml", "--set", f"model.pretrained={exported['llama_micro']}",
                         "--set", f"model.lora.rank={lora_rank}", "--set", "train.steps=2",
                         "--set", "train.global_batch=4", "--set", "train.micro_batch=4", "--set", "train.threads=1",
                         "--set", f"run.out_dir={tmp_path}", "--set", "run.name=ft"])
    assert status == 0
    assert export_hf.main([str(tmp_path / "ft"), str(tmp_path / "ft_hf")]) == 0
    capsys.readouterr()
    outputs = []
    for source in (tmp_path / "ft", tmp_path / "ft_hf"):
        assert generate.main([str(source), "--prompt", "The history of", "--max-new-tokens", "5", "--seed", "3"]) == 0
        outputs.append(capsys.readouterr())
    run_out, export_out = outputs
    assert run_out.out.startswith("The history of") and len(run_out.out) > len("The history of\n")
    assert run_out.out == export_out.out
    assert f"(step 2, {exported['llama_micro']})" in run_out.err


def listing(directory):
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("size", SIZES)
def test_evaluate_reproduces_the_final_validation_loss_and_writes_only_its_file(size, runs, capsys):
    run_dir = runs[size]
    before = listing(run_dir)
    assert evaluate.main([str(run_dir)]) == 0
    assert "validation loss" in capsys.readouterr().out
    after = listing(run_dir)
    result_name = "eval_step_0000004.json"
    assert set(after) - set(before) == {result_name}
    assert {k: v for k, v in after.items() if k != result_name} == before
    result = json.loads((run_dir / result_name).read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["val_loss"] == summary["final_val_loss"]
    assert result["step"] == 4 and result["precision"] == "fp32"
    (run_dir / result_name).unlink()


def test_evaluate_an_explicit_checkpoint(runs, capsys):
    run_dir = runs["llama_micro"]
    ckpt = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    assert evaluate.main([str(run_dir), "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert (run_dir / "eval_step_0000004.json").is_file()
    (run_dir / "eval_step_0000004.json").unlink()


def test_bad_input_exits_2_with_one_line_and_no_traceback(runs, tmp_path, capsys):
    garbage = tmp_path / "step_0000001.pt"
    garbage.write_bytes(b"not a checkpoint")
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    calls = [
        (export_hf.main, [str(tmp_path / "missing"), str(tmp_path / "out")]),
        (export_hf.main, [str(garbage), str(tmp_path / "out")]),
        (export_hf.main, [str(not_a_run), str(tmp_path / "out")]),
        (export_hf.main, [str(runs["llama_micro"]), str(runs["llama_micro"])]),  # never written into a run
        (generate.main, [str(tmp_path / "missing")]),
        (generate.main, [str(garbage)]),
        (evaluate.main, [str(tmp_path / "missing")]),
        (evaluate.main, [str(not_a_run)]),
        (evaluate.main, [str(runs["llama_micro"]), "--checkpoint", str(garbage)]),
    ]
    for main, argv in calls:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "out").exists()

"""The fine-tuning settings the paper follows (issue 31): the MoLS estimate inside the warm-up for
every run and every paper config, Appendix A's Adam, Table 4's LLM-Adapters setup (loss on the
prompt too, the Alpaca prompt, a seeded random validation split, 4 beams), MMLU scored in the
prompt the run trained with, data.chat_template: null, and Table 5's GaLore/APOLLO overlays with
LlamaFactory's fine-tuning defaults. Tiny models and tokenizers, offline."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from configs import IGNORE_INDEX, ConfigError
from data.instructions import (alpaca_prompt, collate, mmlu_header, mmlu_prompt, mmlu_prompt_ids,
                               mmlu_question, split_validation, tokenize_records, uses_chat_template)
from reproduce import paper
from reproduce.jobs import experiment_jobs, load_job_config
from training.config import load_config
from tools.multiple_choice import evaluate_mmlu, mmlu_items

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "assets" / "tokenizer"
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def chat_tokenizer():
    chat = AutoTokenizer.from_pretrained(TOKENIZER)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2000, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=1, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()


# ------------------------------------------------------------------ the estimate inside the warm-up

def test_an_estimate_at_or_after_the_warm_up_is_a_config_error():
    # the quickstart warms up for 25 of its 250 steps
    assert load_config([QUICKSTART], ["mols.enabled=true", "mols.estimate_at=24"]).mols_estimate_step == 24
    with pytest.raises(ConfigError) as error:
        load_config([QUICKSTART], ["mols.enabled=true", "mols.estimate_at=25"])
    assert "mols.estimate_at: the MoLS estimate at step 25 is not inside the warm-up (25 steps)" in str(error.value)
    assert "set mols.estimate_at below 25 or warm up longer" in str(error.value)
    # the default (1% of the steps) too: 12 steps warm up for round(1.2) = 1
    with pytest.raises(ConfigError, match=r"estimate_at \(null: ceil\(1% of train.steps\)\): the MoLS estimate at step 1"):
        load_config([QUICKSTART], ["mols.enabled=true", "train.steps=12"])
    assert load_config([QUICKSTART], ["mols.enabled=true", "train.steps=12", "train.warmup_steps=2"])
    # measuring SNRs with every multiplier 1 has nothing to ramp; hand-set multipliers do
    assert load_config([QUICKSTART], ["mols.enabled=true", "mols.fixed_multipliers={}", "mols.estimate_at=100"])
    with pytest.raises(ConfigError, match="not inside the warm-up"):
        load_config([QUICKSTART], ["mols.enabled=true", "mols.fixed_multipliers={mlp: 2.0}", "mols.estimate_at=100"])
    assert load_config([QUICKSTART], ["mols.estimate_at=100"])  # MoLS off: nothing estimated


def test_no_paper_config_estimates_outside_its_warm_up():
    checked = 0
    for key in paper.runnable():
        seen = set()
        for job in experiment_jobs(key):
            if (job.model, job.variant) in seen:
                continue  # the cells of a grid differ in learning rate and seed only
            seen.add((job.model, job.variant))
            cfg = load_job_config(job)
            if cfg.mols.enabled and cfg.mols.fixed_multipliers != {}:
                assert cfg.mols_estimate_step < cfg.warmup_steps, (key, job.run_name)
                checked += 1
    assert checked > 50


def test_table_4_estimates_inside_llm_adapters_100_warm_up_steps():
    (job,) = [j for j in experiment_jobs("4") if j.variant.mols]
    cfg = load_job_config(job)
    assert cfg.warmup_steps == 100 and cfg.mols_estimate_step == 10 and cfg.train.steps == 31932
    with pytest.raises(ConfigError, match="step 320 is not inside the warm-up"):  # the paper's 1%
        load_config([ROOT / c for c in job.configs], [*job.overrides, "mols.estimate_at=null"])


# ------------------------------------------------------------------ Tables 4 and 5: their settings

def test_every_fine_tuning_cell_runs_appendix_as_adam():
    for table in ("4", "5"):
        for job in experiment_jobs(table):
            cfg = load_job_config(job)
            assert cfg.optimizer.betas == [0.9, 0.95] and cfg.optimizer.eps == 1e-8, job.run_name


def test_table_4_trains_on_prompt_and_response_in_the_alpaca_prompt_and_table_5_on_responses():
    for job in experiment_jobs("4"):
        cfg = load_job_config(job)
        assert cfg.data.train_on_inputs is True and cfg.data.chat_template is False
    for job in experiment_jobs("5"):
        cfg = load_job_config(job)
        assert cfg.data.train_on_inputs is False and cfg.data.chat_template is None


def test_table_5_low_rank_rows_take_llamafactorys_fine_tuning_defaults():
    by_method = {}
    for job in experiment_jobs("5", models=["gemma3_1b"]):
        by_method[job.variant.method] = load_job_config(job).optimizer.options
    assert (by_method["galore"].rank, by_method["galore"].scale, by_method["galore"].update_proj_gap) == (16, 2.0, 200)
    apollo = by_method["apollo"]
    assert (apollo.rank, apollo.scale, apollo.update_proj_gap, apollo.proj, apollo.scale_type) == \
        (16, 32.0, 200, "random", "channel")
    # pre-training keeps Table 9's
    (galore,) = [j for j in experiment_jobs("1", models=["llama_60m"], seeds=[0]) if j.variant.method == "galore"]
    options = load_job_config(galore).optimizer.options
    assert options.rank is None and options.scale == 0.25


def test_train_on_inputs_puts_the_loss_on_every_token(tokenizer):
    records = [{"instruction": "Name a color.", "output": "Blue."}, {"instruction": "Add.", "input": "2 and 3",
                                                                      "output": "five"}]
    response_only = tokenize_records(records, tokenizer, cutoff_len=256)
    everything = tokenize_records(records, tokenizer, cutoff_len=256, train_on_inputs=True)
    assert everything.train_on_inputs and not response_only.train_on_inputs
    for ex, alone in zip(everything.examples, response_only.examples):
        assert list(ex.input_ids) == list(alone.input_ids) and ex.prompt_len == 0 and alone.prompt_len > 0
        assert list(ex.labels) == list(ex.input_ids)
    batch = collate(everything.examples, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row, ex in enumerate(everything.examples):  # only the padding is ignored
        assert (batch["labels"][row, len(ex.input_ids):] == IGNORE_INDEX).all()
        assert int((batch["labels"][row] != IGNORE_INDEX).sum()) == len(ex.input_ids) <= width
    assert everything.fingerprint() != response_only.fingerprint()  # a resume would not mix the two
    with pytest.raises(ConfigError, match="data.train_on_inputs: only used with data.source: instructions"):
        load_config([QUICKSTART], ["data.train_on_inputs=true"])


def test_the_commonsense_validation_split_is_llm_adapters_seeded_random_120():
    import datasets

    records = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(500)]
    train, val = split_validation(records, 120, seed=42)
    assert len(train) == 380 and len(val) == 120
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in val}
    assert val != records[-120:]
    split = datasets.Dataset.from_list(records).train_test_split(test_size=120, shuffle=True, seed=42)
    assert val == list(split["test"]) and train == list(split["train"])
    with pytest.raises(ValueError):
        split_validation(records[:100], 120)


def test_commonsense_decodes_with_4_beams_by_default():
    from scripts.evaluate import default_beams, main as evaluate

    assert default_beams("commonsense") == 4 and default_beams("choices") == 1
    with pytest.raises(SystemExit):
        evaluate(["runs/none", "--task", "choices", "--data", "x.jsonl", "--num-beams", "0"])


# ------------------------------------------------------------------ MMLU in the training prompt

def score(model, context: list[int], letter_ids: list[int]) -> float:
    ids = torch.tensor([context + letter_ids])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(logp[len(context) + i - 1, t]) for i, t in enumerate(letter_ids))


DEV = [{"question": f"Dev question {i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4} for i in range(5)]
TEST = [{"question": "Which letter?", "choices": ["a", "b", "c", "d"], "answer": 2},
        {"question": "Another one?", "choices": ["e", "f", "g", "h"], "answer": 0}]
SHOTS = [(d["question"], d["choices"], d["answer"]) for d in DEV]


def test_mmlu_in_the_alpaca_prompt_scores_the_letters_as_the_response(tokenizer):
    model = tiny_model()
    result = evaluate_mmlu(model, tokenizer, {"astronomy": TEST}, {"astronomy": DEV}, prompt_format="alpaca")
    correct = []
    for q in TEST:
        text = alpaca_prompt({"instruction": mmlu_prompt("astronomy", q["question"], q["choices"], SHOTS)})
        context = tokenizer(text)["input_ids"]
        assert text.endswith("Answer:\n\n### Response:\n")
        scores = [score(model, context, tokenizer(letter, add_special_tokens=False)["input_ids"]) for letter in "ABCD"]
        correct.append(max(range(4), key=lambda i: scores[i]) == q["answer"])
    assert result["subjects"]["astronomy"] == 100 * sum(correct) / 2
    items = mmlu_items("astronomy", TEST, DEV, 5, "alpaca", tokenizer)
    assert items[0]["choices"] == ["A", "B", "C", "D"] and items[0]["prompt"] == tokenizer(
        alpaca_prompt({"instruction": mmlu_prompt("astronomy", "Which letter?", ["a", "b", "c", "d"], SHOTS)}))["input_ids"]
    # the plain format (lm-eval's) is unchanged: " A" ... after the k-shot text
    assert mmlu_items("astronomy", TEST, DEV)[0]["choices"] == [" A", " B", " C", " D"]


def test_mmlu_in_the_chat_template_asks_each_shot_as_a_turn(chat_tokenizer):
    ids = mmlu_prompt_ids("astronomy", "Which letter?", ["a", "b", "c", "d"], chat_tokenizer, SHOTS[:2])
    text = chat_tokenizer.decode(ids)
    first = mmlu_header("astronomy") + mmlu_question("Dev question 0?", ["w", "x", "y", "z"])
    assert text == (f"<s>user\n{first}</s>\n<s>assistant\nA</s>\n"
                    f"<s>user\n{mmlu_question('Dev question 1?', ['w', 'x', 'y', 'z'])}</s>\n<s>assistant\nB</s>\n"
                    f"<s>user\n{mmlu_question('Which letter?', ['a', 'b', 'c', 'd'])}</s>\n<s>assistant\n")
    # zero-shot, it is exactly the prompt mmlu_record's training records have
    from data.instructions import mmlu_record, prompt_ids
    record = mmlu_record("Which letter?", ["a", "b", "c", "d"], 2, subject="astronomy")
    assert mmlu_prompt_ids("astronomy", "Which letter?", ["a", "b", "c", "d"], chat_tokenizer) == \
        prompt_ids(record, chat_tokenizer)
    model = tiny_model()
    result = evaluate_mmlu(model, chat_tokenizer, {"astronomy": TEST}, {"astronomy": DEV}, prompt_format="chat")
    assert set(result["categories"]) == {"STEM", "Average"}


def test_chat_template_null_uses_the_tokenizers_template_where_it_has_one(tokenizer, chat_tokenizer):
    """data.chat_template: null means the tokenizer's chat template where it has one (as the
    configs say), else the Alpaca prompt; training and the MMLU evaluation decide alike."""
    from scripts.evaluate import mmlu_prompt_format

    records = [{"instruction": "Say yes.", "output": "yes"}]
    assert tokenize_records(records, chat_tokenizer).chat_template is True      # null
    assert tokenize_records(records, chat_tokenizer, use_chat_template=False).chat_template is False
    assert tokenize_records(records, tokenizer).chat_template is False          # no template: Alpaca
    assert uses_chat_template(chat_tokenizer) and not uses_chat_template(chat_tokenizer, False)
    finetune = load_config([ROOT / "configs" / "finetune_demo.yaml"])
    assert finetune.data.chat_template is None
    assert mmlu_prompt_format(finetune, chat_tokenizer) == "chat" and mmlu_prompt_format(finetune, tokenizer) == "alpaca"
    alpaca = load_config([ROOT / "configs" / "finetune_demo.yaml"], ["data.chat_template=false"])
    assert mmlu_prompt_format(alpaca, chat_tokenizer) == "alpaca"
    assert mmlu_prompt_format(load_config([QUICKSTART]), chat_tokenizer) == "plain"   # not instruction-tuned
    base = (ROOT / "configs" / "paper" / "finetune" / "base.yaml").read_text()
    assert "null: the tokenizer's chat template where it has one, else the Alpaca prompt" in base

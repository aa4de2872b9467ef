"""Fine-tuning parts (issue 21): pretrained models and LoRA (peft), MoLS classes of LLaMA-3.2 /
Qwen2.5 / Gemma3 names and of LoRA adapters, instruction data with the loss on the response only,
and the multiple-choice evaluator. Tiny models built from configs, offline."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, LlamaConfig, Qwen2Config

from configs import IGNORE_INDEX, UserError
from data.instructions import (ALPACA_PROMPT_NO_INPUT, SYNTHETIC_PATH, InstructionStream, collate,
                               commonsense_record, instruction_batches, load_records, mmlu_prompt,
                               alpaca_prompt, prompt_and_response_ids, shipped_synthetic, synthetic_records, tokenize_records)
from models import build_model
from models.loss import loss_sum_and_count
from models.pretrained import apply_lora, load_pretrained, merge_lora
from mols import MoLS, param_groups
from mols.groups import CLASSES, adapted_name, base_class, classify
from tools.multiple_choice import (MMLU_SUBJECT_CATEGORY, evaluate_generation, evaluate_log_likelihood,
                                      evaluate_mmlu, extract_answer, generate_response, items_from_records,
                                      mmlu_categories)

TOKENIZER = "tests/assets/tokenizer"
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
VOCAB = 2000


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def tiny(arch: str, layers: int = 2, seed: int = 0):
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, num_hidden_layers=layers, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "llama":      # LLaMA-3.2's layout: GQA, tied embedding
        cfg = LlamaConfig(tie_word_embeddings=True, **common)
    elif arch == "qwen2":    # Qwen2.5's: q/k/v biases, GQA, tied embedding
        cfg = Qwen2Config(tie_word_embeddings=True, **common)
    else:                    # Gemma3's text model: q/k norms, pre/post feed-forward norms
        cfg = Gemma3TextConfig(head_dim=8, sliding_window=8, **common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()


def expected_class(name: str) -> str:
    layer = adapted_name(name)
    for key, cls in (("embed_tokens", "emb"), ("lm_head", "head"), ("q_proj", "qk"), ("k_proj", "qk"),
                     ("v_proj", "vo"), ("o_proj", "vo"), ("gate_proj", "mlp"), ("up_proj", "mlp"),
                     ("down_proj", "mlp")):
        if f".{key}." in f".{layer}":
            return cls
    return "other"


# ------------------------------------------------------------------------------------------------
# Module classes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("lora", [False, True])
def test_every_trainable_parameter_of_the_finetuning_models_is_in_exactly_one_class(arch, lora):
    model = tiny(arch)
    if lora:
        model = apply_lora(model, rank=4, seed=0)
    named = list(model.named_parameters())
    trainable = [n for n, p in named if p.requires_grad]
    segments = classify(named)
    assert [s.name for s in segments] == trainable            # each once, in order, frozen left out
    for seg in segments:
        assert seg.module_class in CLASSES and seg.dim is None
        assert seg.module_class == expected_class(seg.name), seg.name
    groups = param_groups(model)
    grouped = [n for g in groups for n in g["names"]]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    classes = {g["module_class"] for g in groups}
    if lora:   # adapters on every linear layer but the head; embeddings, norms and head frozen
        assert classes == {"qk", "vo", "mlp"}
        assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
        layers = sum(1 for _ in model.base_model.model.model.layers)
        assert len(trainable) == layers * 7 * 2
    else:
        assert classes == {"emb", "qk", "vo", "mlp", "other"}   # tied head: not a separate tensor
    if arch == "gemma3":
        for norm in ("self_attn.q_norm", "self_attn.k_norm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "input_layernorm", "post_attention_layernorm"):
            full = f"model.layers.0.{norm}.weight"
            assert base_class(full) == "other"
            assert base_class("base_model.model." + full) == "other"


def test_lora_names_take_the_class_of_the_layer_they_adapt():
    prefix = "base_model.model.model.layers.3."
    cases = {"self_attn.q_proj.lora_A.default.weight": "qk", "self_attn.k_proj.lora_B.default.weight": "qk",
             "self_attn.v_proj.lora_A.default.weight": "vo", "self_attn.o_proj.lora_B.my_adapter.weight": "vo",
             "mlp.gate_proj.lora_A.default.weight": "mlp", "mlp.up_proj.lora_B.default.weight": "mlp",
             "mlp.down_proj.lora_A.default.weight": "mlp", "self_attn.q_proj.base_layer.weight": "qk",
             "self_attn.q_proj.lora_magnitude_vector.default.weight": "qk"}
    for tail, cls in cases.items():
        assert base_class(prefix + tail) == cls, tail
    assert base_class("base_model.model.model.embed_tokens.lora_embedding_A.default") == "emb"
    assert base_class("base_model.model.lm_head.modules_to_save.default.weight") == "head"
    assert base_class("base_model.model.lm_head.original_module.weight") == "head"
    assert adapted_name(prefix + "self_attn.q_proj.lora_A.default.weight") == "model.layers.3.self_attn.q_proj.lora.weight"
    # per-layer grouping still sees the layer number
    segs = classify([(prefix + "mlp.up_proj.lora_A.default.weight", torch.zeros(2, 2, requires_grad=True))], "layers")
    assert segs[0].module_class == "layer3.mlp"


@pytest.mark.parametrize("size", ["llama_micro", "gpt2_micro", "qwen2_micro"])
def test_pretraining_names_are_unchanged_by_the_adapter_mapping(size):
    for name, _ in build_model(size, 64).named_parameters():
        assert adapted_name(name) == name


def test_lora_on_gpt2_fused_qkv_is_refused():
    model = apply_lora(build_model("gpt2_micro", 64), rank=2, target_modules=["c_attn"], seed=0)
    with pytest.raises(ValueError, match="fused QKV"):
        param_groups(model)


# ------------------------------------------------------------------------------------------------
# LoRA + MoLS, merge and export
# ------------------------------------------------------------------------------------------------

def random_batches(n, rows=4, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(4, VOCAB, (rows, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_lora_with_mols_calibrates_and_scales_the_adapter_learning_rates(arch):
    model = apply_lora(tiny(arch), rank=4, seed=0)
    # B starts at zero (so A's gradient is zero): one plain update first, as training would have
    plain = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**random_batches(1, seed=9)[0]).loss.backward()
    plain.step()
    model.zero_grad()
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    mols = MoLS(model, optimizer, estimate_step=0, warmup_steps=0, uncertainty_groups=0)
    calibration = mols.calibrate(model, iter(random_batches(6)))
    assert set(calibration.alphas) == {"qk", "vo", "mlp"} and calibration.alphas["vo"] == 1.0
    assert all(math.isfinite(a) and a > 0 for a in calibration.alphas.values())
    seen = {}
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.update({g["module_class"]: g["lr"] for g in opt.param_groups}))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(**random_batches(1, seed=1)[0]).loss.backward()
    optimizer.step()
    for cls, lr in seen.items():
        assert lr == pytest.approx(1e-3 * calibration.alphas[cls], rel=1e-12)
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)        # put back after the step
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == p.requires_grad, name                         # adapters move, base frozen


def test_project_loss_and_mols_see_the_same_names_on_a_peft_model():
    model = apply_lora(tiny("qwen2"), rank=2, seed=0)
    batch = random_batches(1)[0]
    loss, count = loss_sum_and_count(model, batch)                       # the trainer's loss path
    assert torch.allclose(loss / count, model(**batch).loss, rtol=1e-5)
    names = {n for g in param_groups(model) for n in g["names"]}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_merged_lora_model_saves_and_loads_with_from_pretrained_and_gives_the_peft_logits(arch, tmp_path, tokenizer):
    base = tiny(arch)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model, tok = load_pretrained(base_dir)
    assert tok.pad_token_id == 3 and model.training and not model.config.use_cache
    model = apply_lora(model, rank=4, alpha=8, seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for batch in random_batches(3):                  # train so that B != 0
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    model.eval()
    probe = random_batches(1, seed=5)[0]["input_ids"]
    with torch.no_grad():
        peft_logits = model(input_ids=probe).logits
        base_logits = base.eval()(input_ids=probe).logits
    assert not torch.allclose(peft_logits, base_logits, atol=1e-4)
    merged = merge_lora(model)
    assert type(merged).__name__ == type(base).__name__
    assert not any("lora" in n for n, _ in merged.named_parameters())
    out = tmp_path / "merged"
    merged.save_pretrained(out)
    loaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        loaded_logits = loaded(input_ids=probe).logits
    torch.testing.assert_close(loaded_logits, peft_logits, rtol=1e-5, atol=1e-5)
    assert merge_lora(loaded) is loaded


def test_lora_defaults_follow_table_11_and_llamafactory():
    model = apply_lora(tiny("llama"), rank=8)
    config = model.peft_config["default"]
    assert config.r == 8 and config.lora_alpha == 16 and config.lora_dropout == 0.0
    targets = {name.rsplit(".", 1)[-1] for name in config.target_modules}   # peft expands "all-linear"
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


# ------------------------------------------------------------------------------------------------
# Instruction data
# ------------------------------------------------------------------------------------------------

RECORDS = [{"instruction": "Name a color.", "input": "", "output": "Blue is a color."},
           {"instruction": "Add the numbers.", "input": "2 and 3", "output": "five"},
           {"instruction": "Say yes.", "output": "yes"}]


def test_alpaca_prompt_labels_cover_the_response_tokens_only(tokenizer):
    data = tokenize_records(RECORDS, tokenizer, cutoff_len=512)
    assert not data.chat_template and data.skipped == 0 and data.truncated == 0
    for record, ex in zip(RECORDS, data.examples):
        prompt = tokenizer(alpaca_prompt(record))["input_ids"]
        response = tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert list(ex.input_ids[: ex.prompt_len]) == prompt
        assert list(ex.input_ids[ex.prompt_len:]) == response
        for position, (token, label) in enumerate(zip(ex.input_ids, ex.labels)):
            assert label == (IGNORE_INDEX if position < ex.prompt_len else token)
    assert "### Input:\n2 and 3" in tokenizer.decode(data.examples[1].input_ids[: data.examples[1].prompt_len])


def test_chat_template_prompt_and_batch_padding_token_by_token(tokenizer):
    chat = AutoTokenizer.from_pretrained(TOKENIZER)
    chat.chat_template = CHAT_TEMPLATE
    data = tokenize_records(RECORDS, chat, cutoff_len=512)
    assert data.chat_template
    ex = data.examples[1]
    assert chat.decode(ex.input_ids[: ex.prompt_len]) == "<s>user\nAdd the numbers.\n\n2 and 3</s>\n<s>assistant\n"
    assert chat.decode(ex.input_ids[ex.prompt_len:]) == "five</s>\n"        # the end of turn is learned
    batch = collate(data.examples, chat.pad_token_id)
    width = max(len(e.input_ids) for e in data.examples)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, width)
    for row, e in enumerate(data.examples):
        for t in range(width):
            token, label = int(batch["input_ids"][row, t]), int(batch["labels"][row, t])
            if t < e.prompt_len:
                assert label == IGNORE_INDEX and token == e.input_ids[t]
            elif t < len(e.input_ids):
                assert label == token == e.input_ids[t]
            else:
                assert label == IGNORE_INDEX and token == chat.pad_token_id
    # the training loss counts exactly the response tokens
    _, count = loss_sum_and_count(tiny("llama", layers=1), batch)
    assert int(count) == sum(len(e.input_ids) - e.prompt_len for e in data.examples)
    mask_batch = collate(data.examples, chat.pad_token_id, attention_mask=True, pad_to_multiple_of=8)
    assert mask_batch["input_ids"].shape[1] % 8 == 0 and int(mask_batch["attention_mask"].sum()) == \
        sum(len(e.input_ids) for e in data.examples)


def test_loss_on_response_only_equals_a_hand_computed_loss(tokenizer):
    data = tokenize_records(RECORDS, tokenizer, cutoff_len=512)
    batch = collate(data.examples, tokenizer.pad_token_id)
    model = tiny("llama", layers=1)
    with torch.no_grad():
        loss, count = loss_sum_and_count(model, batch)
        total, n = 0.0, 0
        for e in data.examples:
            ids = torch.tensor(e.input_ids)
            logp = F.log_softmax(model(input_ids=ids[None]).logits[0].double(), -1)
            for t in range(e.prompt_len, len(ids)):      # response token t, predicted at t - 1
                total -= float(logp[t - 1, ids[t]])
                n += 1
    assert int(count) == n
    assert float(loss) == pytest.approx(total, rel=1e-5)


def test_truncation_at_the_cutoff_and_records_without_response_are_skipped(tokenizer):
    long = {"instruction": "Repeat all of these words, one after another, exactly as they are.",
            "output": " ".join(["word"] * 50)}
    prompt, response = prompt_and_response_ids(long, tokenizer)
    data = tokenize_records([long], tokenizer, cutoff_len=len(prompt) + 5)
    ex = data.examples[0]
    assert len(ex.input_ids) == len(prompt) + 5 and data.truncated == 1
    assert list(ex.input_ids) == (prompt + response)[: len(prompt) + 5]
    data = tokenize_records([long, {"instruction": "Go.", "output": "ok"}], tokenizer, cutoff_len=len(prompt))
    assert data.skipped == 1 and len(data) == 1
    with pytest.raises(UserError):
        tokenize_records([long], tokenizer, cutoff_len=len(prompt))


def test_instruction_stream_resumes_exactly_and_splits_ranks(tokenizer):
    records = shipped_synthetic("train")[:50]
    data = tokenize_records(records, tokenizer, cutoff_len=256)
    stream = InstructionStream(data, micro_batch=4, pad_id=tokenizer.pad_token_id, shuffle_seed=7)
    first = [stream.next_batch() for _ in range(5)]
    state = stream.state_dict()
    assert set(state) >= {"epoch", "position", "examples", "rank", "world_size"}
    json.dumps(state)                                    # checkpoint-friendly: ints and strings
    rest = [stream.next_batch() for _ in range(20)]      # crosses an epoch (50 per epoch)
    resumed = InstructionStream(data, micro_batch=4, pad_id=tokenizer.pad_token_id, shuffle_seed=7, state=state)
    again = [resumed.next_batch() for _ in range(20)]
    for a, b in zip(rest, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    fresh = InstructionStream(data, micro_batch=4, pad_id=tokenizer.pad_token_id, shuffle_seed=7)
    assert all(torch.equal(a["input_ids"], fresh.next_batch()["input_ids"]) for a in first)
    # another seed or another data set refuses the state
    with pytest.raises(UserError):
        InstructionStream(data, micro_batch=4, pad_id=tokenizer.pad_token_id, shuffle_seed=8, state=state)
    # two ranks: disjoint halves of each epoch, in step
    seen = []
    for rank in range(2):
        s = InstructionStream(data, micro_batch=5, pad_id=tokenizer.pad_token_id, rank=rank, world_size=2)
        assert s.examples_per_epoch == 25
        rows = [r for _ in range(5) for r in s.next_batch()["input_ids"]]
        seen.append({tuple(r[r != tokenizer.pad_token_id].tolist()) for r in rows})
    assert not seen[0] & seen[1] and len(seen[0]) + len(seen[1]) == len({tuple(e.input_ids) for e in data.examples})
    val = instruction_batches(data, batch_size=8, pad_id=tokenizer.pad_token_id)
    assert sum(len(b["input_ids"]) for b in val) == len(data)


def test_shipped_synthetic_set_is_the_generator_output():
    shipped = load_records(SYNTHETIC_PATH)
    assert shipped == json.loads(json.dumps(synthetic_records()))
    assert len(shipped_synthetic("train")) == 320 and len(shipped_synthetic("test")) == 80
    for r in shipped:
        assert r["output"] == f"the correct answer is {r['answer']}" and r["answer"] == r["options"][r["label"]]
    assert {r["task"] for r in shipped} == {"compare", "kind", "largest", "count", "longer"}


def test_mmlu_and_commonsense_formats():
    shot = ("What is 1 + 1?", ["1", "2", "3", "4"], 1)
    prompt = mmlu_prompt("elementary_mathematics", "What is 2 + 2?", ["3", "4", "5", "6"], [shot])
    assert prompt == ("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
                      "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                      "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    record = commonsense_record("Pick the fruit.", ["apple", "stone"], 0, ["solution1", "solution2"])
    assert record["instruction"] == ("Pick the fruit.\n\nSolution1: apple\nSolution2: stone\n\n"
                                     "Answer format: solution1/solution2")
    assert record["output"] == "the correct answer is solution1"


# ------------------------------------------------------------------------------------------------
# The multiple-choice evaluator
# ------------------------------------------------------------------------------------------------

def by_hand(model, tokenizer, prompt, choice):
    """Summed log-probability of the choice's tokens, from one forward pass of prompt + choice."""
    context = tokenizer(prompt)["input_ids"]
    whole = tokenizer(prompt + choice)["input_ids"]
    assert whole[: len(context)] == context
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(context), len(whole))), len(whole) - len(context)


def test_log_likelihood_scores_equal_the_hand_computation(tokenizer):
    model = tiny("llama").eval()
    items = [{"prompt": "The sky is", "choices": [" blue", " made of green cheese", " loud"], "label": 0},
             {"prompt": "Water is", "choices": [" wet", " dry"], "label": 1},
             {"prompt": "Question: two plus two?\nAnswer:", "choices": [" four", " five", " a fish"], "label": 0}]
    result = evaluate_log_likelihood(model, tokenizer, items, batch_size=2)
    preds, preds_norm, preds_tok = [], [], []
    for item, scores in zip(items, result.scores):
        hand = [by_hand(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        for (lp, n), s, c in zip(hand, scores, item["choices"]):
            assert s.logprob == pytest.approx(lp, abs=1e-4) and s.tokens == n and s.chars == len(c)
        preds.append(int(np.argmax([lp for lp, _ in hand])))
        preds_norm.append(int(np.argmax([lp / len(c) for (lp, _), c in zip(hand, item["choices"])])))
        preds_tok.append(int(np.argmax([lp / n for lp, n in hand])))
    labels = [i["label"] for i in items]
    assert result.predictions == preds and result.predictions_norm == preds_norm
    assert result.acc == sum(p == y for p, y in zip(preds, labels)) / 3
    assert result.acc_norm == sum(p == y for p, y in zip(preds_norm, labels)) / 3
    assert result.acc_token_norm == sum(p == y for p, y in zip(preds_tok, labels)) / 3


def test_mmlu_five_shot_and_category_averages(tokenizer):
    assert len(MMLU_SUBJECT_CATEGORY) == 57
    assert {c: sum(v == c for v in MMLU_SUBJECT_CATEGORY.values()) for c in set(MMLU_SUBJECT_CATEGORY.values())} == \
        {"STEM": 18, "Social Sciences": 12, "Humanities": 13, "Other": 14}
    cats = mmlu_categories({"anatomy": [True, False], "virology": [True, True], "philosophy": [False],
                            "astronomy": [True, True, True, False]})
    assert cats == {"Other": 75.0, "Humanities": 0.0, "STEM": 75.0, "Average": 100 * 6 / 9}
    model = tiny("llama").eval()
    dev = [{"question": f"Dev question {i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4} for i in range(5)]
    test = [{"question": "Which letter?", "choices": ["a", "b", "c", "d"], "answer": 2},
            {"question": "Another one?", "choices": ["e", "f", "g", "h"], "answer": 0}]
    result = evaluate_mmlu(model, tokenizer, {"astronomy": test}, {"astronomy": dev}, shots=5)
    correct = []
    for q in test:
        prompt = mmlu_prompt("astronomy", q["question"], q["choices"], [(d["question"], d["choices"], d["answer"]) for d in dev])
        assert prompt.count("Answer:") == 6
        scores = [by_hand(model, tokenizer, prompt, f" {letter}")[0] for letter in "ABCD"]
        correct.append(int(np.argmax(scores)) == q["answer"])
    assert result["subjects"]["astronomy"] == 100 * sum(correct) / 2
    assert result["categories"]["STEM"] == result["categories"]["Average"] == 100 * sum(correct) / 2


def test_answer_extraction_as_llm_adapters():
    options = ["answer1", "answer2", "answer3", "answer4", "answer5"]
    assert extract_answer("the correct answer is answer3", options) == "answer3"
    assert extract_answer("answer2, or maybe answer1", options) == "answer2"
    assert extract_answer("### Response:\nthe correct answer is answer4", options) == "answer4"
    assert extract_answer("no idea", options) == ""
    assert extract_answer("It is True", ["true", "false"]) == ""          # case sensitive
    assert extract_answer("so: false", ["true", "false"]) == "false"


def test_generation_evaluation_is_greedy_decoding_then_extraction(tokenizer):
    model = tiny("llama").eval()
    records = shipped_synthetic("test")[:3]
    result = evaluate_generation(model, tokenizer, records, max_new_tokens=6)
    for record, response, answer in zip(records, result.responses, result.answers):
        ids = tokenizer(ALPACA_PROMPT_NO_INPUT.format(instruction=record["instruction"]))["input_ids"]
        out = []
        with torch.no_grad():                                    # greedy by hand
            for _ in range(6):
                token = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                out.append(token)
                if token == tokenizer.eos_token_id:
                    break
        assert response == tokenizer.decode(out, skip_special_tokens=True)
        assert answer == extract_answer(response, record["options"])
    assert result.acc == sum(a == r["answer"] for a, r in zip(result.answers, records)) / 3
    assert generate_response(model, tokenizer, records[0], max_new_tokens=6) == result.responses[0]
    # the same records scored by log-likelihood of "the correct answer is <option>"
    items = items_from_records(records, tokenizer)
    assert items[0]["choices"][0] == f"the correct answer is {records[0]['options'][0]}"
    assert evaluate_log_likelihood(model, tokenizer, items).n == 3

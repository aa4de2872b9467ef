"""Multiple-choice evaluation of a (fine-tuned) causal LM, two ways.

1. Log-likelihood (`score_choices`, `evaluate_log_likelihood`, MMLU's `evaluate_mmlu`): each
   choice is scored by the summed log-probability of its tokens given the prompt; the prediction
   is the best choice (`acc`), or the best by log-probability per character of the choice
   (`acc_norm`) or per token (`acc_token_norm`). The continuation's tokens are those of
   tokenize(prompt + choice) after the prompt's tokens, the prompt with the tokenizer's special
   tokens (a bos where the model has one), prompts too long truncated from the left.
   How this differs from lm-evaluation-harness: the same sum and the same acc / acc_norm
   (lm-eval's acc_norm divides by the choice's length in characters too); lm-eval moves trailing
   spaces of the context onto the continuation and, for most HF models, adds no bos, so scores
   differ where a prompt ends in a space or the tokenizer adds a bos. MMLU has three prompt
   formats (`evaluate_mmlu(..., prompt_format=)`): "plain", the k-shot text alone with the choices
   " A", " B", " C", " D" after "Answer:" (lm-eval's `mmlu` prompt, for models not trained on
   instruction records); "chat" and "alpaca", the prompt a fine-tuning run trained with
   (data.instructions.mmlu_prompt_ids: the chat template with the shots as earlier turns, or the
   Alpaca prompt around the k-shot text) with the letters "A" ... "D" as the response. LlamaFactory,
   which the paper follows for MMLU, evaluates in its training template too and compares the
   logits of the four letter tokens at the last position: for single-token letters that picks the
   same answer as the log-likelihoods of the letters.
   Category averages (`mmlu_categories`) are over questions, not subjects (LlamaFactory's and
   MMLU's way; lm-eval's groups average subjects weighted by size, which is the same).

2. Generation + answer extraction (`evaluate_generation`, LLM-Adapters' commonsense evaluation,
   which the paper's Table 4 follows): the model generates after the Alpaca prompt (or its chat
   template), the first option name in the generation ("answer2", "true", "option1", ...) is the
   prediction, and an item is right when it equals the record's `answer`; a generation naming no
   option counts as wrong. Greedy decoding by default; LLM-Adapters' script decodes with beam
   search (4 beams): pass `num_beams=4` for its way (scripts/evaluate.py --task commonsense does
   by default). lm-eval scores these tasks by
   log-likelihood instead, zero-shot and on its own prompts, so its numbers are not comparable to
   Table 4's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from data.instructions import LETTERS, mmlu_prompt, mmlu_prompt_ids, prompt_ids

# MMLU's 57 subjects and the category each is averaged in: LlamaFactory's table
# (evaluation/mmlu/mapping.json), which follows MMLU's own categories.
STEM, SOCIAL, HUMANITIES, OTHER = "STEM", "Social Sciences", "Humanities", "Other"
MMLU_CATEGORIES = (STEM, SOCIAL, HUMANITIES, OTHER)
MMLU_SUBJECT_CATEGORY: dict[str, str] = {
    "abstract_algebra": STEM, "anatomy": OTHER, "astronomy": STEM, "business_ethics": OTHER,
    "clinical_knowledge": OTHER, "college_biology": STEM, "college_chemistry": STEM,
    "college_computer_science": STEM, "college_mathematics": STEM, "college_medicine": OTHER,
    "college_physics": STEM, "computer_security": STEM, "conceptual_physics": STEM,
    "econometrics": SOCIAL, "electrical_engineering": STEM, "elementary_mathematics": STEM,
    "formal_logic": HUMANITIES, "global_facts": OTHER, "high_school_biology": STEM,
    "high_school_chemistry": STEM, "high_school_computer_science": STEM,
    "high_school_european_history": HUMANITIES, "high_school_geography": SOCIAL,
    "high_school_government_and_politics": SOCIAL, "high_school_macroeconomics": SOCIAL,
    "high_school_mathematics": STEM, "high_school_microeconomics": SOCIAL, "high_school_physics": STEM,
    "high_school_psychology": SOCIAL, "high_school_statistics": STEM, "high_school_us_history": HUMANITIES,
    "high_school_world_history": HUMANITIES, "human_aging": OTHER, "human_sexuality": SOCIAL,
    "international_law": HUMANITIES, "jurisprudence": HUMANITIES, "logical_fallacies": HUMANITIES,
    "machine_learning": STEM, "management": OTHER, "marketing": OTHER, "medical_genetics": OTHER,
    "miscellaneous": OTHER, "moral_disputes": HUMANITIES, "moral_scenarios": HUMANITIES,
    "nutrition": OTHER, "philosophy": HUMANITIES, "prehistory": HUMANITIES,
    "professional_accounting": OTHER, "professional_law": HUMANITIES, "professional_medicine": OTHER,
    "professional_psychology": SOCIAL, "public_relations": SOCIAL, "security_studies": SOCIAL,
    "sociology": SOCIAL, "us_foreign_policy": SOCIAL, "virology": OTHER, "world_religions": HUMANITIES,
}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# Log-likelihood scoring
# --------------------------------------------------------------------------------------------

@dataclass
class ChoiceScore:
    logprob: float       # summed log-probability of the choice's tokens given the prompt
    tokens: int
    chars: int


def continuation_ids(tokenizer, prompt: str, choice: str) -> tuple[list[int], list[int]]:
    """(prompt ids, choice ids): the choice's ids are those of prompt + choice after the prompt's."""
    context = list(tokenizer(prompt)["input_ids"])
    whole = list(tokenizer(prompt + choice)["input_ids"])
    if whole[: len(context)] != context:   # a merge across the boundary: score the choice alone
        return context, list(tokenizer(choice, add_special_tokens=False)["input_ids"])
    return context, whole[len(context):]


@torch.no_grad()
def score_sequences(model: torch.nn.Module, requests: Sequence[tuple[list[int], list[int]]], *,
                    batch_size: int = 8, max_length: Optional[int] = None) -> list[float]:
    """Summed log-probability of each request's continuation ids given its context ids (fp32
    log-softmax; right-padded batches; contexts cut from the left to fit `max_length`)."""
    device = _device(model)
    scores: list[float] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start: start + batch_size]
        rows = []
        for context, cont in chunk:
            if not cont:
                raise ValueError("a choice with no tokens cannot be scored")
            ids = context + cont
            if max_length is not None and len(ids) > max_length:
                ids = ids[len(ids) - max_length:]
            rows.append((ids, len(cont)))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = F.log_softmax(logits, dim=-1).cpu()
        for i, (ids, n_cont) in enumerate(rows):
            n = len(ids)
            targets = torch.tensor(ids[n - n_cont:])
            picked = logprobs[i, n - n_cont - 1: n - 1].gather(1, targets.unsqueeze(1)).squeeze(1)
            scores.append(float(picked.sum()))
    return scores


def score_choices(model, tokenizer, prompt: str | Sequence[int], choices: Sequence[str], **kwargs) -> list[ChoiceScore]:
    """Scores of each choice after `prompt`: a string, or token ids (then each choice is tokenized
    on its own, without special tokens)."""
    if isinstance(prompt, str):
        requests = [continuation_ids(tokenizer, prompt, c) for c in choices]
    else:
        requests = [(list(prompt), list(tokenizer(c, add_special_tokens=False)["input_ids"])) for c in choices]
    logprobs = score_sequences(model, requests, **kwargs)
    return [ChoiceScore(lp, len(cont), len(choice)) for lp, (_, cont), choice in zip(logprobs, requests, choices)]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))   # ties: the first


@dataclass
class MultipleChoiceResult:
    acc: float
    acc_norm: float          # per character of the choice (lm-eval's acc_norm)
    acc_token_norm: float    # per token of the choice
    n: int
    predictions: list[int] = field(default_factory=list)
    predictions_norm: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    scores: list[list[ChoiceScore]] = field(default_factory=list)


def evaluate_log_likelihood(model, tokenizer, items: Iterable[dict], **kwargs) -> MultipleChoiceResult:
    """Accuracy on items {"prompt" (text or token ids), "choices", "label"} by log-likelihood of
    each choice."""
    preds, preds_norm, preds_tok, labels, all_scores = [], [], [], [], []
    for item in items:
        scores = score_choices(model, tokenizer, item["prompt"], item["choices"], **kwargs)
        preds.append(_argmax([s.logprob for s in scores]))
        preds_norm.append(_argmax([s.logprob / max(1, s.chars) for s in scores]))
        preds_tok.append(_argmax([s.logprob / s.tokens for s in scores]))
        labels.append(int(item["label"]))
        all_scores.append(scores)
    n = len(labels)
    if not n:
        raise ValueError("no items to evaluate")
    correct = [p == y for p, y in zip(preds, labels)]
    return MultipleChoiceResult(sum(correct) / n, sum(p == y for p, y in zip(preds_norm, labels)) / n,
                                sum(p == y for p, y in zip(preds_tok, labels)) / n, n, preds, preds_norm,
                                correct, all_scores)


# --------------------------------------------------------------------------------------------
# MMLU: k-shot, four category averages
# --------------------------------------------------------------------------------------------

MMLU_PROMPT_FORMATS = ("plain", "alpaca", "chat")


def mmlu_items(subject: str, questions: Sequence[dict], dev: Sequence[dict], shots: int = 5,
               prompt_format: str = "plain", tokenizer=None) -> list[dict]:
    """Log-likelihood items of one subject: each question (dicts {"question", "choices",
    "answer": index}) after the first `shots` dev questions with their answers, in
    `prompt_format` (see the module docstring; "alpaca" and "chat" need the tokenizer)."""
    if prompt_format not in MMLU_PROMPT_FORMATS:
        raise ValueError(f"prompt_format: one of {MMLU_PROMPT_FORMATS}, got {prompt_format!r}")
    support = [(d["question"], d["choices"], int(d["answer"])) for d in dev[:shots]]
    if len(support) < shots:
        raise ValueError(f"{subject}: {shots}-shot needs {shots} dev questions, got {len(support)}")
    if prompt_format == "plain":
        return [{"prompt": mmlu_prompt(subject, q["question"], q["choices"], support),
                 "choices": [f" {LETTERS[i]}" for i in range(len(q["choices"]))], "label": int(q["answer"])}
                for q in questions]
    return [{"prompt": mmlu_prompt_ids(subject, q["question"], q["choices"], tokenizer, support,
                                       use_chat_template=prompt_format == "chat"),
             "choices": list(LETTERS[: len(q["choices"])]), "label": int(q["answer"])}
            for q in questions]


def mmlu_categories(correct_by_subject: dict[str, Sequence[bool]]) -> dict[str, float]:
    """Accuracy (in %) per category and "Average", over questions, from each subject's results."""
    pooled: dict[str, list[bool]] = {c: [] for c in MMLU_CATEGORIES}
    for subject, correct in correct_by_subject.items():
        if subject not in MMLU_SUBJECT_CATEGORY:
            raise ValueError(f"unknown MMLU subject {subject!r}")
        pooled[MMLU_SUBJECT_CATEGORY[subject]].extend(bool(c) for c in correct)
    every = [c for values in pooled.values() for c in values]
    out = {c: 100.0 * sum(v) / len(v) for c, v in pooled.items() if v}
    out["Average"] = 100.0 * sum(every) / len(every) if every else float("nan")
    return out


def evaluate_mmlu(model, tokenizer, test: dict[str, Sequence[dict]], dev: dict[str, Sequence[dict]],
                  shots: int = 5, prompt_format: str = "plain", **kwargs) -> dict:
    """k-shot MMLU: {"categories": {STEM, Social Sciences, Humanities, Other, Average},
    "subjects": {subject: accuracy %}}. `test` and `dev` map subjects to their questions;
    `prompt_format` as mmlu_items."""
    correct_by_subject, subjects = {}, {}
    for subject, questions in test.items():
        items = mmlu_items(subject, questions, dev[subject], shots, prompt_format, tokenizer)
        result = evaluate_log_likelihood(model, tokenizer, items, **kwargs)
        correct_by_subject[subject] = result.correct
        subjects[subject] = 100.0 * result.acc
    return {"categories": mmlu_categories(correct_by_subject), "subjects": subjects}


# --------------------------------------------------------------------------------------------
# Generation + answer extraction (LLM-Adapters' commonsense evaluation)
# --------------------------------------------------------------------------------------------

def extract_answer(text: str, options: Sequence[str]) -> str:
    """The first option name found in `text` ("" when none), as LLM-Adapters extracts: case
    sensitive, in the text after "### Response:" when the prompt is echoed, commas removed."""
    text = text.replace(",", "").split("### Response:")[-1].strip()
    names = sorted(set(options), key=len, reverse=True)   # "answer10" before "answer1"
    found = re.findall("|".join(re.escape(n) for n in names), text)
    return found[0] if found else ""


@torch.no_grad()
def generate_response(model, tokenizer, record: dict, *, max_new_tokens: int = 32, num_beams: int = 1,
                      use_chat_template: Optional[bool] = None) -> str:
    """The model's response to one record's prompt (greedy, or beam search with num_beams > 1)."""
    ids = torch.tensor([prompt_ids(record, tokenizer, use_chat_template)], device=_device(model))
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=num_beams, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@dataclass
class GenerationResult:
    acc: float
    n: int
    answers: list[str]
    responses: list[str]
    correct: list[bool]


def evaluate_generation(model, tokenizer, records: Iterable[dict], options: Optional[Sequence[str]] = None,
                        **kwargs) -> GenerationResult:
    """Accuracy of records ({"instruction", "answer"}, and "options" unless `options` is given)
    by generating a response and extracting the answer from it."""
    was_training = model.training
    model.eval()
    try:
        answers, responses, correct = [], [], []
        for record in records:
            response = generate_response(model, tokenizer, record, **kwargs)
            answer = extract_answer(response, options or record["options"])
            responses.append(response)
            answers.append(answer)
            correct.append(answer == record["answer"])
    finally:
        model.train(was_training)
    if not correct:
        raise ValueError("no records to evaluate")
    return GenerationResult(sum(correct) / len(correct), len(correct), answers, responses, correct)


def items_from_records(records: Iterable[dict], tokenizer, use_chat_template: Optional[bool] = None) -> list[dict]:
    """Log-likelihood items from commonsense-style records (with "choices" and "label"): the
    prompt is the training prompt and the choices are the outputs naming each option ("the
    correct answer is answer2"), so both evaluations ask the same question."""
    items = []
    for record in records:
        items.append({"prompt": prompt_ids(record, tokenizer, use_chat_template), "label": int(record["label"]),
                      "choices": [f"the correct answer is {name}" for name in record["options"][: len(record["choices"])]]})
    return items

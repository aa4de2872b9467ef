"""Instruction data for fine-tuning: Alpaca-style records -> token ids with the loss on the
response (or, with `train_on_inputs`, on the prompt too), resumable per-rank micro-batches, and
multiple-choice prompt formats.

    records = load_records("commonsense_170k.json")            # or a .jsonl, or synthetic_records()
    examples = tokenize_records(records, tokenizer, cutoff_len=2048)
    stream = InstructionStream(examples, micro_batch=4, rank=r, world_size=w, pad_id=tokenizer.pad_token_id)
    batch = stream.next_batch()    # {"input_ids", "labels"}: LongTensor[micro_batch, longest in the batch]
    state = stream.state_dict()    # ... later: stream.load_state_dict(state) continues with the next batch

Records are dicts with `instruction`, `input` (may be empty or missing) and `output`, the format
of Alpaca, of LLM-Adapters' commonsense_170k (which adds `answer`) and of any local jsonl/json.

The prompt (`use_chat_template`, data.chat_template): true, the tokenizer's chat template (the
user turn holds the instruction, then the input after a blank line; the assistant turn holds the
output, and the template's own end-of-turn tokens are part of the response, so the model learns
to stop); false, the Alpaca prompt (ALPACA_PROMPT / ALPACA_PROMPT_NO_INPUT, as LLM-Adapters
trains) followed by the output and the eos token; None, the chat template when the tokenizer has
one (a base model's tokenizer may: Qwen2.5's does), else the Alpaca prompt (`uses_chat_template`).
Labels are the input ids with IGNORE_INDEX on every prompt position and on the padding: the loss
(models/loss.py, HF's own) counts the response tokens only; with `train_on_inputs` (LLM-Adapters'
default, Table 4's runs) only the padding is ignored and the prompt counts too. The prompt and the
response are tokenized separately, so the boundary is exact (LLM-Adapters tokenizes them joined
and masks by the prompt's length, which differs only where a BPE merge would cross the boundary).
`cutoff_len` truncates the whole sequence from the right (LLM-Adapters' way; its eos is dropped
then); a record left with no response token is skipped and counted.

Micro-batches are right-padded to their longest sequence (causal attention: padding at the end
never changes the real positions' logits, so no attention mask is needed; `collate(...,
attention_mask=True)` adds one for code that wants it).

Order: epoch e is a permutation of the examples seeded by `data.order.epoch_seed(shuffle_seed,
seed_offset, e)`, as the other training streams; rank r of W takes positions r, r+W, ... of it (cut
to a multiple of W so the ranks stay in step and never share an example within an epoch). The
state is the stream's identity (a fingerprint of the tokenized examples, seeds, rank, world size)
and the cursor (epoch, position): resuming gives exactly the batches an uninterrupted stream gives.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from configs import IGNORE_INDEX, UserError
from data.order import check_ranks, documents_per_rank, epoch_seed

STATE_FORMAT = 1
SYNTHETIC_PATH = Path(__file__).resolve().parent / "assets" / "synthetic_instructions.jsonl"

# The Alpaca prompt (Stanford Alpaca; LLM-Adapters and DoRA train commonsense_170k with it).
ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further "
                 "context. Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

def load_records(path: str | Path) -> list[dict]:
    """Instruction records from a .jsonl file (one object a line) or a .json file (a list of
    objects, as commonsense_170k.json). Each needs `instruction` and `output`; `input` is optional."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such instruction file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON{' lines' if path.suffix == '.jsonl' else ''} ({err})") from None
    if not isinstance(records, list) or not records:
        raise UserError(f"{path}: expected a non-empty list of instruction records")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str) \
                or not isinstance(record.get("output"), str):
            raise UserError(f"{path}: record {i} has no string 'instruction' and 'output'")
    return records


def alpaca_prompt(record: dict) -> str:
    """The Alpaca prompt of a record, ending with "### Response:\\n" (the output follows it)."""
    if record.get("input"):
        return ALPACA_PROMPT.format(instruction=record["instruction"], input=record["input"])
    return ALPACA_PROMPT_NO_INPUT.format(instruction=record["instruction"])


def user_message(record: dict) -> str:
    """The user turn of a record under a chat template: the instruction, then the input."""
    return record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat_template(tokenizer, setting: Optional[bool] = None) -> bool:
    """Whether records are prompted with the chat template: `setting` (data.chat_template) when
    given, else whether the tokenizer has one. Training and every evaluation decide it here."""
    return has_chat_template(tokenizer) if setting is None else bool(setting)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_ids(record: dict, tokenizer, use_chat_template: Optional[bool] = None) -> list[int]:
    """The ids of a record's prompt alone (what a model generates the response after)."""
    if uses_chat_template(tokenizer, use_chat_template):
        user = [{"role": "user", "content": user_message(record)}]
        return _ids(tokenizer, tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                    special=False)
    return _ids(tokenizer, alpaca_prompt(record), special=True)


def prompt_and_response_ids(record: dict, tokenizer, use_chat_template: Optional[bool] = None) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one record; the loss is on the response ids."""
    if uses_chat_template(tokenizer, use_chat_template):
        user = [{"role": "user", "content": user_message(record)}]
        prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": record["output"]}],
                                                  tokenize=False)
        prompt = _ids(tokenizer, prompt_text, special=False)   # the template writes its own bos
        if full_text.startswith(prompt_text):
            response = _ids(tokenizer, full_text[len(prompt_text):], special=False)
        else:  # a template that renders the last turn differently: the output and eos
            response = _ids(tokenizer, record["output"], special=False) + [tokenizer.eos_token_id]
        return prompt, response
    prompt = _ids(tokenizer, alpaca_prompt(record), special=True)
    return prompt, _ids(tokenizer, record["output"], special=False) + [tokenizer.eos_token_id]


@dataclass(frozen=True)
class InstructionExample:
    input_ids: np.ndarray    # int64[n]: prompt then response, truncated at cutoff_len
    prompt_len: int          # the first prompt_len positions carry no loss (label IGNORE_INDEX): the
                             # prompt, or none (0) with train_on_inputs

    @property
    def labels(self) -> np.ndarray:
        labels = self.input_ids.copy()
        labels[: self.prompt_len] = IGNORE_INDEX
        return labels


@dataclass
class InstructionSet:
    examples: list[InstructionExample]
    skipped: int           # records with no response token left after truncation
    truncated: int         # records cut at cutoff_len
    chat_template: bool
    train_on_inputs: bool = False  # the loss on the prompts too

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for ex in self.examples:
            digest.update(np.int64(ex.prompt_len).tobytes())
            digest.update(np.ascontiguousarray(ex.input_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.examples)


def tokenize_records(records: Iterable[dict], tokenizer, *, cutoff_len: int = 2048,
                     use_chat_template: Optional[bool] = None, train_on_inputs: bool = False) -> InstructionSet:
    """Every record as token ids with its prompt length (0 with `train_on_inputs`: the loss on
    every token); see the module docstring. A record whose response is cut away entirely is
    skipped either way."""
    if cutoff_len < 2:
        raise ValueError(f"cutoff_len must be at least 2, got {cutoff_len}")
    chat = uses_chat_template(tokenizer, use_chat_template)
    if not chat and tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to end the responses with")
    examples, skipped, truncated = [], 0, 0
    for record in records:
        prompt, response = prompt_and_response_ids(record, tokenizer, chat)
        ids = (prompt + response)[:cutoff_len]
        if len(ids) <= len(prompt):
            skipped += 1
            continue
        truncated += len(prompt) + len(response) > cutoff_len
        examples.append(InstructionExample(np.asarray(ids, dtype=np.int64), 0 if train_on_inputs else len(prompt)))
    if not examples:
        raise UserError(f"no instruction record has a response token within cutoff_len {cutoff_len}")
    return InstructionSet(examples, skipped, truncated, chat, train_on_inputs)


def collate(examples: Sequence[InstructionExample], pad_id: int, *, pad_to_multiple_of: int = 1,
            attention_mask: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded to the longest example (rounded up to `pad_to_multiple_of`); labels
    IGNORE_INDEX on the prompt and the padding."""
    longest = max(len(ex.input_ids) for ex in examples)
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(examples), width), dtype=np.int64)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = ex.input_ids
        labels[row, :n] = ex.labels
        mask[row, :n] = 1
    batch = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
    if attention_mask:
        batch["attention_mask"] = torch.from_numpy(mask)
    return batch


# --------------------------------------------------------------------------------------------
# The training stream
# --------------------------------------------------------------------------------------------

class InstructionStream:
    """Endless micro-batches of one rank's share of an InstructionSet, resumable exactly.

    The interface of data.stream.TrainStream: `next_batch()`, `micro_batch`, `state_dict()` /
    `load_state_dict()` (a flat dict of ints and strings; a state of another stream is refused),
    iteration yields `(batch, state_after)`. A micro-batch may span two epochs."""

    def __init__(self, dataset: InstructionSet, *, micro_batch: int, pad_id: int, rank: int = 0,
                 world_size: int = 1, shuffle_seed: int = 42, seed_offset: int = 0,
                 pad_to_multiple_of: int = 1, state: Optional[dict] = None):
        check_ranks(rank, world_size, seed_offset)
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be positive, got {micro_batch}")
        self.dataset, self.micro_batch, self.pad_id = dataset, micro_batch, pad_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.per_rank = documents_per_rank(len(dataset), world_size, "the instruction set")
        self.identity = {"format": STATE_FORMAT, "source": "instructions", "examples": dataset.fingerprint(),
                         "shuffle_seed": shuffle_seed, "seed_offset": seed_offset, "rank": rank,
                         "world_size": world_size}
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, None
        if state is not None:
            self.load_state_dict(state)

    @property
    def examples_per_epoch(self) -> int:
        """Examples this rank reads per epoch (the same on every rank)."""
        return self.per_rank

    def _mine(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            seed = epoch_seed(self.identity["shuffle_seed"], self.identity["seed_offset"], epoch)
            order = np.random.default_rng(seed).permutation(len(self.dataset))
            world, rank = self.identity["world_size"], self.identity["rank"]
            self._order, self._order_epoch = order[rank: self.per_rank * world: world], epoch
        return self._order

    def state_dict(self) -> dict:
        """Where the stream stands: the next batch is the first after this state."""
        return {**self.identity, "epoch": self.epoch, "position": self.position}

    state = property(state_dict)

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"instruction stream state must be a dict, got {type(state).__name__}")
        changed = [f"{key} was {state.get(key)!r}, now {value!r}" for key, value in self.identity.items()
                   if state.get(key) != value]
        if changed:
            raise UserError("cannot continue the saved instruction stream exactly: " + "; ".join(changed))
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.per_rank:
            raise ValueError(f"instruction stream state has an invalid position: {state!r}")
        self.epoch, self.position = epoch, position

    def next_batch(self) -> dict:
        chosen = []
        while len(chosen) < self.micro_batch:
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
            chosen.append(self.dataset.examples[int(self._mine(self.epoch)[self.position])])
            self.position += 1
        return collate(chosen, self.pad_id, pad_to_multiple_of=self.pad_to_multiple_of)

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        while True:
            batch = self.next_batch()
            yield batch, self.state_dict()

    def close(self) -> None:
        """Nothing to stop (no worker processes); here for TrainStream's interface."""


def instruction_batches(dataset: InstructionSet, *, batch_size: int, pad_id: int, rank: int = 0,
                        world_size: int = 1) -> list[dict]:
    """A fixed evaluation set: the examples in order, in batches of `batch_size`; rank r keeps
    batches r, r+W, ... (as data.stream.build_val_batches)."""
    check_ranks(rank, world_size)
    groups = [dataset.examples[i: i + batch_size] for i in range(0, len(dataset), batch_size)]
    return [collate(group, pad_id) for group in groups[rank::world_size]]


# --------------------------------------------------------------------------------------------
# Multiple-choice prompts
# --------------------------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJ"


def mmlu_question(question: str, choices: Sequence[str]) -> str:
    """One MMLU question as MMLU's own evaluation (and lm-evaluation-harness's `mmlu`) writes it:
    the question, "A. ..." lines, then "Answer:" (the answer letter follows after a space)."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_prompt(subject: str, question: str, choices: Sequence[str],
                shots: Sequence[tuple[str, Sequence[str], int]] = ()) -> str:
    """A k-shot MMLU prompt: the subject header, each shot with its answer letter, then the
    question ending in "Answer:". `shots` are (question, choices, answer index), MMLU's dev split."""
    parts = [mmlu_header(subject)]
    for q, c, answer in shots:
        parts.append(f"{mmlu_question(q, c)} {LETTERS[answer]}\n\n")
    parts.append(mmlu_question(question, choices))
    return "".join(parts)


def mmlu_record(question: str, choices: Sequence[str], answer: int, subject: str = "") -> dict:
    """An MMLU item (e.g. of its auxiliary_train split) as an instruction record to train on."""
    instruction = (mmlu_header(subject) if subject else "") + mmlu_question(question, choices)
    return {"instruction": instruction, "input": "", "output": LETTERS[answer], "answer": LETTERS[answer]}


def mmlu_prompt_ids(subject: str, question: str, choices: Sequence[str], tokenizer,
                    shots: Sequence[tuple[str, Sequence[str], int]] = (),
                    use_chat_template: Optional[bool] = None) -> list[int]:
    """A k-shot MMLU question in the prompt a run trained with (mmlu_record's records): with the
    chat template, each shot a user turn (the first with the subject header, as mmlu_record's
    instruction) answered by an assistant turn holding its letter, then the question as the last
    user turn (LlamaFactory's k-shot evaluation); with the Alpaca prompt, which has one turn,
    mmlu_prompt's whole k-shot text as the instruction. The answer letter is the response that
    follows (scored on its own tokens, as training saw it)."""
    if uses_chat_template(tokenizer, use_chat_template):
        turns = [(mmlu_question(q, c), LETTERS[answer]) for q, c, answer in shots] + [(mmlu_question(question, choices), None)]
        messages = []
        for i, (user, assistant) in enumerate(turns):
            messages.append({"role": "user", "content": (mmlu_header(subject) if i == 0 else "") + user})
            if assistant is not None:
                messages.append({"role": "assistant", "content": assistant})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _ids(tokenizer, text, special=False)   # the template writes its own bos
    record = {"instruction": mmlu_prompt(subject, question, choices, shots), "input": ""}
    return _ids(tokenizer, alpaca_prompt(record), special=True)


# The answer formats of LLM-Adapters' commonsense_170k: each task names its options like this and
# the output ends with "the correct answer is <option>". The evaluator extracts the first option
# named in a generation (tools.multiple_choice.extract_answer).
COMMONSENSE_OPTIONS = {
    "boolq": ["true", "false"],
    "piqa": ["solution1", "solution2"],
    "social_i_qa": ["answer1", "answer2", "answer3"],
    "hellaswag": ["ending1", "ending2", "ending3", "ending4"],
    "winogrande": ["option1", "option2"],
    "ARC-Challenge": ["answer1", "answer2", "answer3", "answer4", "answer5"],
    "ARC-Easy": ["answer1", "answer2", "answer3", "answer4", "answer5"],
    "openbookqa": ["answer1", "answer2", "answer3", "answer4"],
}


def commonsense_record(question: str, choices: Sequence[str], label: int, option_names: Sequence[str]) -> dict:
    """A multiple-choice item in commonsense_170k's style: the question, each choice introduced by
    its option name ("Answer1: ..."), the answer format line, and the output "the correct answer
    is <option>". `choices` and `label` are kept for log-likelihood scoring."""
    if len(choices) > len(option_names):
        raise ValueError(f"{len(choices)} choices but only {len(option_names)} option names")
    names = list(option_names[: len(choices)])
    lines = [question.strip(), ""]
    if names != list(choices):   # boolq's options are its answers: nothing to list
        lines += [f"{name.capitalize()}: {choice}" for name, choice in zip(names, choices)] + [""]
    lines += ["Answer format: " + "/".join(names)]
    answer = names[label]
    return {"instruction": "\n".join(lines), "input": "", "output": f"the correct answer is {answer}",
            "answer": answer, "choices": list(choices), "label": label, "options": names}


# --------------------------------------------------------------------------------------------
# The shipped synthetic set (for the offline CPU demonstration)
# --------------------------------------------------------------------------------------------

_COLORS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "brown", "pink"]
_ANIMALS = ["dog", "cat", "horse", "rabbit", "eagle", "salmon", "tiger", "sheep", "mouse", "whale"]
_FOODS = ["bread", "apple", "rice", "cheese", "carrot", "soup", "banana", "honey", "pasta", "grape"]
_TOOLS = ["hammer", "spoon", "ladder", "pencil", "bucket", "needle", "shovel", "scissors", "rope", "broom"]
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve"]
_KINDS = {"color": _COLORS, "animal": _ANIMALS, "food": _FOODS, "tool": _TOOLS}


def _synthetic_item(rng: random.Random, family: int) -> dict:
    """One clearly synthetic multiple-choice item of five families (each in one of the
    commonsense answer formats)."""
    if family == 0:      # true/false: number comparison
        a, b = rng.sample(range(1, 100), 2)
        truth = a > b
        return commonsense_record(f"Is {a} greater than {b}?", ["true", "false"], 0 if truth else 1,
                                  COMMONSENSE_OPTIONS["boolq"]) | {"task": "compare"}
    if family == 1:      # two solutions: which word belongs to a kind
        kind, other = rng.sample(sorted(_KINDS), 2)
        right, wrong = rng.choice(_KINDS[kind]), rng.choice(_KINDS[other])
        label = rng.randrange(2)
        choices = [right, wrong] if label == 0 else [wrong, right]
        return commonsense_record(f"Which of these is a {kind}?", choices, label,
                                  COMMONSENSE_OPTIONS["piqa"]) | {"task": "kind"}
    if family == 2:      # four answers: the largest number
        numbers = rng.sample(range(1, 100), 4)
        return commonsense_record("Which number is the largest?", [str(n) for n in numbers],
                                  numbers.index(max(numbers)), COMMONSENSE_OPTIONS["openbookqa"]) | {"task": "largest"}
    if family == 3:      # four endings: continue a counting sequence
        start = rng.randrange(0, 9)
        shown = ", ".join(_NUMBER_WORDS[start: start + 3])
        right = _NUMBER_WORDS[start + 3]
        wrong = rng.sample([w for w in _NUMBER_WORDS if w != right], 3)
        label = rng.randrange(4)
        choices = wrong[:label] + [right] + wrong[label:]
        return commonsense_record(f"Counting up by one: {shown}, ... What comes next?", choices, label,
                                  COMMONSENSE_OPTIONS["hellaswag"]) | {"task": "count"}
    # two options: which word is spelled with more letters
    words = rng.sample(_COLORS + _ANIMALS + _FOODS + _TOOLS, 2)
    while len(words[0]) == len(words[1]):
        words = rng.sample(_COLORS + _ANIMALS + _FOODS + _TOOLS, 2)
    label = 0 if len(words[0]) > len(words[1]) else 1
    return commonsense_record("Which word has more letters?", words, label,
                              COMMONSENSE_OPTIONS["winogrande"]) | {"task": "longer"}


def synthetic_records(n: int = 400, seed: int = 0) -> list[dict]:
    """`n` synthetic multiple-choice instruction records, deterministic in `seed`, families in
    turn; the shipped file `data/assets/synthetic_instructions.jsonl` is synthetic_records(400, 0)
    (the first 320 to train on, the last 80 to evaluate, SYNTHETIC_SPLIT)."""
    rng = random.Random(seed)
    return [_synthetic_item(rng, i % 5) for i in range(n)]


SYNTHETIC_SPLIT = 320


def shipped_synthetic(split: str = "train") -> list[dict]:
    """The shipped synthetic set's `train` (320) or `test` (80) records."""
    records = load_records(SYNTHETIC_PATH)
    if split == "train":
        return records[:SYNTHETIC_SPLIT]
    if split == "test":
        return records[SYNTHETIC_SPLIT:]
    raise ValueError(f"split: train or test, got {split!r}")


def write_synthetic(path: str | Path = SYNTHETIC_PATH) -> None:
    """Regenerate the shipped file (deterministic; tests check that it matches)."""
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in synthetic_records()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The trainer's data section (`data.source: instructions`)
# --------------------------------------------------------------------------------------------

def tokenizer_spec(cfg) -> str:
    """The tokenizer a run uses (`cfg` the whole config): data.tokenizer, except that a fine-tuning
    run (model.pretrained) uses the pretrained model's own tokenizer unless data.tokenizer names
    another than the default."""
    from data.config import DataConfig

    if cfg.model.pretrained and cfg.data.tokenizer == DataConfig.tokenizer:
        return cfg.model.pretrained
    return cfg.data.tokenizer


def split_validation(records: Sequence[dict], size: int = 120, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """(training records, `size` validation records), a seeded random split: exactly
    datasets' `Dataset.train_test_split(test_size=size, shuffle=True, seed=seed)`, which
    LLM-Adapters' finetune.py uses for its val_set_size (120 for commonsense_170k): the
    validation records are the first `size` of numpy's default_rng(seed) permutation, the
    training records the rest in that order."""
    if not 0 < size < len(records):
        raise ValueError(f"cannot hold out {size} of {len(records)} records")
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[size:]], [records[i] for i in order[:size]]


def instruction_records(path: str, split: str) -> list[dict]:
    """The records of data.path (split "train") or data.val_path ("val"); shipped-synthetic is
    the shipped set's train or test split."""
    from data.config import SHIPPED_SYNTHETIC

    if path == SHIPPED_SYNTHETIC:
        return shipped_synthetic("train" if split == "train" else "test")
    return load_records(path)


_SETS: dict = {}


def instruction_set(cfg, tokenizer, split: str, vocab_limit: Optional[int] = None) -> InstructionSet:
    """The tokenized records of a split (`cfg` the data section), kept for the process: the training
    stream, MoLS's extra stream and the validation set tokenize each file once."""
    from data.config import SHIPPED_SYNTHETIC
    from data.tokenizer import tokenizer_fingerprint

    path = cfg.path if split == "train" else (cfg.val_path or SHIPPED_SYNTHETIC)
    key = (path, split, cfg.cutoff_len, cfg.chat_template, cfg.train_on_inputs, tokenizer_fingerprint(tokenizer))
    if key not in _SETS:
        if len(_SETS) >= 4:  # a run holds a train and a validation set
            _SETS.clear()
        _SETS[key] = tokenize_records(instruction_records(path, split), tokenizer, cutoff_len=cfg.cutoff_len,
                                      use_chat_template=cfg.chat_template, train_on_inputs=cfg.train_on_inputs)
    dataset = _SETS[key]
    if vocab_limit is not None:
        largest = max(int(ex.input_ids.max()) for ex in dataset.examples)
        if largest >= vocab_limit:
            raise UserError(f"{path}: token id {largest} from the tokenizer is beyond the model's {vocab_limit} "
                            f"embedding rows; use the model's own tokenizer (data.tokenizer)")
    return dataset


def build_instruction_stream(cfg, tokenizer, *, rank: int, world_size: int, micro_batch: int, seed_offset: int = 0,
                             state: Optional[dict] = None, vocab_limit: Optional[int] = None) -> InstructionStream:
    """data.stream.build_train_stream's counterpart for instruction records (`cfg` the data section)."""
    return InstructionStream(instruction_set(cfg, tokenizer, "train", vocab_limit), micro_batch=micro_batch,
                             pad_id=tokenizer.pad_token_id, rank=rank, world_size=world_size,
                             shuffle_seed=cfg.shuffle_seed, seed_offset=seed_offset, state=state)


def build_instruction_val_batches(cfg, tokenizer, *, rank: int, world_size: int, batch_size: int,
                                  vocab_limit: Optional[int] = None) -> list[dict]:
    """data.stream.build_val_batches's counterpart: every validation record once, in file order,
    the loss where training puts it (the responses, or every token with data.train_on_inputs)."""
    return instruction_batches(instruction_set(cfg, tokenizer, "val", vocab_limit), batch_size=batch_size,
                               pad_id=tokenizer.pad_token_id, rank=rank, world_size=world_size)


def describe_instructions(cfg, tokenizer) -> str:
    """Two lines for the run log (data.stream.describe_data's counterpart)."""
    from data.config import SHIPPED_SYNTHETIC

    train, val = instruction_set(cfg, tokenizer, "train"), instruction_set(cfg, tokenizer, "val")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    where = {SHIPPED_SYNTHETIC: f"{SHIPPED_SYNTHETIC} ({SYNTHETIC_PATH.name})"}
    lengths = [len(ex.input_ids) for ex in train.examples]
    return (f"data: instructions: {where.get(cfg.path, cfg.path)}: {len(train):,} train examples "
            f"({train.skipped} skipped, {train.truncated} truncated at cutoff_len {cfg.cutoff_len}); validation: "
            f"{where.get(cfg.val_path or SHIPPED_SYNTHETIC, cfg.val_path)}: {len(val):,} examples\n"
            f"sequences: one record each, prompt + response (mean {sum(lengths) / len(lengths):.0f}, longest "
            f"{max(lengths)} tokens), loss on {'prompt and response' if train.train_on_inputs else 'the response only'}; "
            f"{'chat template' if train.chat_template else 'Alpaca prompt'}; tokenizer {name} "
            f"({len(tokenizer):,} tokens, eos {tokenizer.eos_token!r}, pad {tokenizer.pad_token!r}); "
            f"shuffle seed {cfg.shuffle_seed}")


def data_pipeline(cfg):
    """(build the training stream, build the validation batches, describe them) for a data
    section: data.stream's for documents, this module's for instruction records; the same
    signatures, so train.py calls them alike."""
    if cfg.instructions:
        return build_instruction_stream, build_instruction_val_batches, describe_instructions
    from data.stream import build_train_stream, build_val_batches, describe_data
    return build_train_stream, build_val_batches, describe_data

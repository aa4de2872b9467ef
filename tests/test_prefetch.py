"""data/prefetch.py: micro-batches made ahead in a thread are the stream's own, in its order, and
a checkpoint holds the position of the batches the run consumed, not of those made ahead."""
import time

import pytest
import torch

import train
from data import build_train_stream, get_tokenizer
from data.prefetch import Prefetcher
from test_data import ASSETS, assets_cfg
from test_faults import arguments, final_model


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer(str(ASSETS / "tokenizer"))


def stream(tokenizer, state=None):
    return build_train_stream(assets_cfg(), tokenizer, rank=0, world_size=1, micro_batch=4, state=state)


def test_the_batches_are_the_streams_and_the_position_is_that_of_the_batches_handed_out(tokenizer):
    plain = stream(tokenizer)
    expected = [(plain.next_batch(), plain.state_dict()) for _ in range(6)]
    ahead = Prefetcher(stream(tokenizer), depth=3)
    for batch, state in expected[:4]:
        got = ahead.next_batch()
        time.sleep(0.05)  # the thread runs ahead meanwhile
        assert torch.equal(got["input_ids"], batch["input_ids"]) and torch.equal(got["labels"], batch["labels"])
        assert ahead.state_dict() == state
    saved = ahead.state_dict()
    ahead.close()
    assert ahead.state_dict() == saved
    assert torch.equal(ahead.next_batch()["input_ids"], expected[4][0]["input_ids"])  # continues after close
    ahead.close()
    resumed = Prefetcher(stream(tokenizer), depth=2)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.next_batch()["input_ids"], expected[4][0]["input_ids"])
    assert resumed.state_dict() == expected[4][1]
    resumed.close()


class Failing:
    """A stream whose third batch fails, as a corrupt data file would."""
    micro_batch = 1

    def __init__(self):
        self.position = 0

    def __iter__(self):
        while True:
            if self.position == 2:
                raise ValueError("bad line 3 of train.jsonl")
            self.position += 1
            yield {"input_ids": torch.tensor([[self.position]])}, {"position": self.position}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

    def close(self):
        pass


def test_an_error_in_the_stream_reaches_the_training_loop_at_the_batch_it_concerns():
    ahead = Prefetcher(Failing(), depth=4)
    assert ahead.next_batch()["input_ids"].item() == 1
    assert ahead.next_batch()["input_ids"].item() == 2
    with pytest.raises(ValueError, match="bad line 3"):
        ahead.next_batch()


def test_a_run_trains_the_same_with_and_without_prefetching(tmp_path):
    steps = ["train.steps=6", "train.checkpoint_every=0"]
    assert train.main(arguments(tmp_path, "ahead", *steps, "data.prefetch=3")) == 0
    assert train.main(arguments(tmp_path, "inline", *steps, "data.prefetch=0")) == 0
    ahead, inline = final_model(tmp_path / "ahead"), final_model(tmp_path / "inline")
    for key in inline:
        assert torch.equal(ahead[key], inline[key]), key


def test_the_prefetch_benchmark_runs(tmp_path, capsys):
    """scripts/bench_prefetch.py (docs/performance.md's data-wait figures), at a smoke size."""
    import json
    from scripts import bench_prefetch
    out = tmp_path / "bench.json"
    assert bench_prefetch.main(["--delay-ms", "30", "--steps", "6", "--threads", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["prefetch"] for r in results] == [0, 2]
    assert results[0]["data_wait_s"] > results[1]["data_wait_s"]

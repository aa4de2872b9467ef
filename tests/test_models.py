import pytest

from models import SIZES, build_model
from mols.groups import count_by_class

# Real parameter counts of the reference harness's LLaMA configs (FIELD_NOTES).
REFERENCE_COUNTS = {"llama_60m": 58.1e6, "llama_130m": 134e6, "llama_350m": 368e6,
                    "llama_1b": 1.34e9, "llama_3b": 2.69e9, "llama_7b": 6.74e9}


@pytest.mark.parametrize("size", sorted(REFERENCE_COUNTS))
def test_llama_sizes_match_the_reference_harness(size):
    model = build_model(size, device="meta")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - REFERENCE_COUNTS[size]) / REFERENCE_COUNTS[size] < 0.01


@pytest.mark.parametrize("size", ["gpt2_125m", "gpt2_355m", "qwen2_350m"])
def test_other_paper_architectures_build(size):
    model = build_model(size, device="meta")
    shape = SIZES[size]
    assert model.config.num_hidden_layers == shape.layers
    assert model.config.hidden_size == shape.hidden


def test_gpt2_125m_has_its_known_size():
    model = build_model("gpt2_125m", device="meta")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(124.4e6, rel=0.01)


def test_llama_60m_is_mostly_embedding_and_head():
    counts = count_by_class(build_model("llama_60m", device="meta"))
    assert (counts["emb"] + counts["head"]) / sum(counts.values()) == pytest.approx(0.56, abs=0.01)


def test_tiny_sizes_take_the_vocabulary_from_the_tokenizer():
    with pytest.raises(ValueError, match="vocab_size"):
        build_model("llama_tiny")
    assert build_model("llama_tiny", 500).config.vocab_size == 500

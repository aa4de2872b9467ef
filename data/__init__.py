"""Data: the embedded offline corpus, tokenizers, resumable training streams, fixed validation sets.

    tokenizer = get_tokenizer(cfg.data.tokenizer)
    stream = build_train_stream(cfg.data, tokenizer, rank=r, world_size=w, micro_batch=b,
                                state=saved_state, vocab_limit=model_vocab)
    for batch, state in stream: ...          # batch: {"input_ids", "labels"} LongTensor[b, seq_len]
    val = build_val_batches(cfg.data, tokenizer, rank=r, world_size=w, batch_size=b)

See data/stream.py for the order, the sequence schemes and the resume state.
"""
from data.embedded import EmbeddedCorpus, load_embedded_corpus
from data.instructions import InstructionStream, load_records, tokenize_records
from data.stream import TrainStream, build_train_stream, build_val_batches, describe_data
from data.tokenizer import check_vocabulary, get_tokenizer, tokenizer_fingerprint

__all__ = [
    "EmbeddedCorpus", "InstructionStream", "TrainStream", "build_train_stream", "build_val_batches", "describe_data",
    "check_vocabulary", "get_tokenizer", "load_embedded_corpus", "load_records", "tokenize_records",
    "tokenizer_fingerprint",
]

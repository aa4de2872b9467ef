"""The label of a position that has no target (padding): torch's cross_entropy default, as in
transformers. data/ writes it, models/loss.py skips it, train.py counts the targets around it."""
IGNORE_INDEX = -100

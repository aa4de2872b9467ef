"""What the commands around a run use, not the training loop: a trained run's model for export,
evaluation and generation (trained_model.py), multiple-choice scoring of fine-tuned models
(multiple_choice.py), one-file copies of sharded checkpoints (`python -m tools.consolidate`), and
the launcher that gives torchrun's workers time to save after a signal (`python -m tools.launch`).
Nothing in the packages below it imports this one (tests/test_architecture.py)."""

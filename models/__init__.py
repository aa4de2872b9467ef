"""Model sizes of the paper (Table 10) and tiny ones for CPU, built with transformers from config."""
from models.build import SIZES, ModelSize, build_model, parameter_report
from models.loss import loss_sum_and_count, mean_loss
from models.pretrained import apply_lora, load_pretrained, merge_lora

__all__ = ["SIZES", "ModelSize", "apply_lora", "build_model", "load_pretrained", "loss_sum_and_count", "mean_loss",
           "merge_lora", "parameter_report"]

"""Model sizes of the paper (Table 10) and tiny ones for CPU, built with transformers from config."""
from models.build import SIZES, ModelSize, build_model, parameter_report
from models.loss import loss_sum_and_count, mean_loss

__all__ = ["SIZES", "ModelSize", "build_model", "loss_sum_and_count", "mean_loss", "parameter_report"]

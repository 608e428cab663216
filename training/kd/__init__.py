"""The unsupervised knowledge-distillation framework (Wu et al. 2022, Sec. 3.2): voice -> generated face ->
student -> parameters, distilled from a frozen image -> parameters teacher. See docs/kd.md."""

from training.kd.export import is_kd_checkpoint, kd_inference_module, model_from_checkpoint

__all__ = ["is_kd_checkpoint", "kd_inference_module", "model_from_checkpoint"]

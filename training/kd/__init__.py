"""The unsupervised knowledge-distillation framework (Wu et al. 2022, Sec. 3.2): voice -> generated face ->
student -> parameters, distilled from a frozen image -> parameters teacher. See docs/kd.md."""

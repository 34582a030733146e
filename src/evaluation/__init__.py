"""Evaluation, in one place.

- metrics.py: a model's loss and accuracy on a device-resident split (`evaluate`, per sample
  `evaluate_samples`, top-1/top-5 `topk_metrics`), and many states of one model evaluated
  together in one pass over each batch (`evaluate_states`).
- checkpoints.py: eval.py's evaluation of a run's checkpoint (raw and averaged models, final and
  best states) and its table.
"""

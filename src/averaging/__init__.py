"""Weight averaging of a model during training."""

"""The regimes-of-SGD study (Sclocchi & Wyart): binary tasks, alpha-scaled centred networks,
step-based SGD with loss-placed checkpoints of observables, NTK statistics and phase diagrams."""

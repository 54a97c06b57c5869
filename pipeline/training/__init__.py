"""Training stage: networks, the hybrid loss, what the engine configs need, checkpoints, DDP and TensorBoard helpers."""

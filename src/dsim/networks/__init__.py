"""Networks: weights files, checkpoints as candidates, training and pretraining."""

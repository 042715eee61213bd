"""One run's loop: the Trainer, its callbacks, optimizers, evaluation, checkpoints, interrupts."""

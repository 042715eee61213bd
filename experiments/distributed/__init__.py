"""Beyond one process: ranks and their collectives, DDP/FSDP2, expert parallelism's groups and
gradients, GPU slots and peaks."""

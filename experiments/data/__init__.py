"""Data: corpus sources and their identity, the shard builder, the Dataset a run reads, batches."""

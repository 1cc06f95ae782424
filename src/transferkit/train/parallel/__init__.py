"""Several processes: ``distributed`` (torchrun's processes, sharded loaders, what rank 0 reads and sends) and
``sharding`` (``--shard-params``: FSDP2 units, gathered checkpoints)."""

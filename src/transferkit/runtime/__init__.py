"""Where and how a network runs: the device, the precision and memory format measured fastest (``fastpath``),
and the kernels chosen on a run's first steps and batches (``kernel_trial``). Below training, inference,
export and advice, which all run networks."""

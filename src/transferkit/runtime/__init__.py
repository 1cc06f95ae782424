"""Where and how a network runs: the device, the precision and memory format measured fastest (``fastpath``),
the kernels chosen on a run's first steps and batches (``kernel_trial``), and ``torch.compile`` of the training
step where it repays (``compiled``). Below training, inference, export and advice, which all run networks."""

"""From a finished run to a deployed model: exports with a parity proof, their sidecar, onnxruntime."""

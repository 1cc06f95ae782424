"""Images: ``sources`` lists DATA (folders, CSVs, built-in sets), ``images`` reads one file safely,
``preprocess`` holds what the weights expect, ``decode`` turns a source into uint8 tensors once,
``augment`` names the training-time augmentations."""

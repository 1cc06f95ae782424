"""The network: ``factory`` builds MODEL strings, ``freeze`` and ``surgery`` change what trains
and what the layers are, ``layer_expr`` parses layer text, ``inspection`` shows structure and
values; ``_trace`` is the dry run that surgery, inspection and the feature cache share."""

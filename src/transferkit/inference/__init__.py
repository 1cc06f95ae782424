"""Using a model: ``runs`` rebuilds a finished run and evaluates it, ``predict`` classifies files."""

"""Serve a trained run or an export over HTTP: dynamic batching, limits on what a request may hold, metrics."""

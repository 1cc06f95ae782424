"""Choosing the strategy in seconds: linear probes at several depths, and sweeps of the head on cached features."""

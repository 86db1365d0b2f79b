"""Operator and developer tools: the demo topology, the benchmark, doctor."""

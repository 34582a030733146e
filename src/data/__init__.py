"""Datasets: reading raw data into CPU tensors (sources) and device-resident batching (loader)."""

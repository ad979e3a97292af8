"""Offline datasets: real PBMC counts and a simulator with known ground truth."""

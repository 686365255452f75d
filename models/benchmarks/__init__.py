"""Benchmarks of the denoiser and the full pipeline; the CLI (`mammogen bench`) is a thin layer over these."""

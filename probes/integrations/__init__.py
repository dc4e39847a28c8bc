"""Callbacks that put the probe inside the trainers people use (Lightning, Hugging Face transformers).

Each module imports its framework when it is imported itself; ``import probes`` needs neither.
"""

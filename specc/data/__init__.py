"""Data: the sources specc reads, their preparation into arrays, tokenizers, and the facts the checker reads from the data."""

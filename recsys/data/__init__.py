"""Interaction data: readers, validation + quarantine, vocab, storage, splits, CSR matrices, synthetic data, fetchers."""

"""Prefect flows: thin wrappers that make pipelines/ steps into tasks (retries, caching,
concurrency, artifacts). Nothing here computes anything the pipelines/ steps do not."""

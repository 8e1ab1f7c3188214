"""Argo side of the pipeline: Hera builders, offline validation, submission and the local runner."""

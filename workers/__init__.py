"""Dramatiq actors: thin wrappers that call tagger code."""

"""Reactions of the disclosure service to other services' events.

This slice only folds registry events into its read model (``projections``); the
public event stream ``chengneng.disclosure.public`` comes with the full service.
"""

"""Prefect flows: thin orchestration over keel.core, one flow per file.

Every flow file calls :func:`keel.flows.settings.configure_prefect` before it imports Prefect: a worker
loads the file by path in a fresh interpreter, so nothing may rest on this package being imported first.
"""

"""Integrations of inferkit's clients with data-processing frameworks, outside the core.

Each integration is a module of its own, imported by name: :mod:`inferkit.integrations.ray` (Ray Data:
picklable client specs, one client per worker). They sit above the clients (integrations -> factory, clients,
batching -> codec); nothing in the core imports them.

Must not import: the integrations themselves (``import inferkit.integrations`` stays free), nor any framework
(ray, pyspark): each module loads its framework only when it is used, if at all.
"""

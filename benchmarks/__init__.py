"""Overhead benchmarks: what a probe hit costs, against the floor and the peers.

``make bench`` runs :mod:`benchmarks.run` (table, JSON, chart) and then
:mod:`benchmarks.check` (exits non-zero when a target ratio is missed).
"""

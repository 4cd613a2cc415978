"""Backends that choose children at each node of the walk."""

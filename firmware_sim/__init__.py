"""Simulated bench board."""

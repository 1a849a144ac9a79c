"""Seed 003's status function."""

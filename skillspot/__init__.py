"""Skillspot: the `skillspot` command, configuration loading and the simulated office."""

"""The base every package stands on: the config model and address helpers. Imports nothing of ours."""

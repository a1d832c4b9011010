"""Skillspot: the `skillspot` command. It only loads the configuration and dispatches to the packages."""

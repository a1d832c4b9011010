"""Reaching the current app's config and services from a view."""
from __future__ import annotations

from flask import current_app

from portal.services import PortalServices
from base.config import Config


def config() -> Config:
    """The box configuration the app was built with."""
    return current_app.config["SKILLSPOT"]


def services() -> PortalServices:
    """The side-effect services the app was built with."""
    return current_app.extensions["skillspot"]

"""The hostapd.conf check starts the installed hostapd in a scratch namespace."""
from __future__ import annotations

import shutil

import pytest

from base.config import HostapdConfig, RadiusClientConfig, RadiusConfig
from provisioning.hostapd import HostapdCheckError, check_hostapd_conf, render_hostapd_conf

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("hostapd") is None, reason="hostapd is not installed")]


def rendered() -> str:
    radius = RadiusConfig(clients=[RadiusClientConfig(address="127.0.0.1", secret="s" * 20)], das_secret="d" * 20)
    return render_hostapd_conf(HostapdConfig(), radius)


def test_rendered_file_is_accepted_by_the_installed_hostapd(tmp_path):
    conf = tmp_path / "hostapd.conf"
    conf.write_text(rendered())
    assert check_hostapd_conf(str(conf)).startswith("hostapd v")


def test_a_key_this_version_does_not_know_is_refused_with_hostapds_words(tmp_path):
    conf = tmp_path / "hostapd.conf"
    conf.write_text(rendered() + "no_such_hostapd_key=1\n")
    with pytest.raises(HostapdCheckError, match="unknown configuration item 'no_such_hostapd_key'"):
        check_hostapd_conf(str(conf))

"""Rendering the box's daemon configuration (dnsmasq, hostapd, nftables, chrony, systemd) from the one config."""

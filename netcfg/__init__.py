"""Everything that speaks to the kernel: the nftables ruleset, the authorised set, neighbours."""

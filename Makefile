# Two entry points on a fresh Debian 12 machine, run as root:
#   make demo   installs what is needed, then walks a phone through a simulated office
#   make test   installs what is needed, then runs the whole test suite
# Both are idempotent: a second run installs nothing.

DEB_PACKAGES := python3-venv iproute2 nftables dnsmasq-base hostapd wpasupplicant \
                freeradius-utils conntrack chromium fonts-thai-tlwg \
                debootstrap systemd-container zbar-tools
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps venv test demo clean

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,central]'
	touch $@

venv: $(VENV)/.installed

test: deps venv
	$(PY) -m pytest

demo: deps venv
	$(VENV)/bin/skillspot demo

clean:
	rm -rf $(VENV) build *.egg-info

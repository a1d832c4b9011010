"""Skillspot: free-WiFi onboarding appliance for DSD labour offices."""
from setuptools import find_packages, setup

setup(
    name="skillspot",
    version="0.1.0",
    description="Captive portal, RADIUS hook, firewall and traffic-data ledger for DSD public WiFi",
    python_requires=">=3.11",
    # Every top-level package of the repository except tests, benchmarks and docs.
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*", "docs", "examples", "ansible*"]),
    include_package_data=True,
    package_data={
        "ledger": ["migrations/*.sql"],
        "portal": ["templates/*.html", "templates/**/*.html", "static/*", "translations/*/LC_MESSAGES/*"],
        "provisioning": ["templates/*"],
        "radius": ["dictionary*"],
        "lineapi": ["templates/*.html"],
        "syncapi": ["openapi.yaml"],
        "central": ["migrations/*.sql", "templates/**/*", "static/*", "translations/*/LC_MESSAGES/*"],
    },
    install_requires=[
        "flask>=3.0",
        # 27.x: the portal's worker (portal/cli.py) builds on gthread's deferral of idle
        # connections (_DEFER), per-worker sockets with reuse_port and the parser's
        # take_buffered(); tests/test_portal_server.py fails if a release changes them.
        "gunicorn>=27,<28",
        "pyrad>=2.5",
        "pyroute2>=0.9.7",
        "scapy>=2.6",
        "sqlite-utils>=3.37",
        "pip-nftables>=1.0.2",
        "pydantic>=2.7",
        "click>=8.1",
        "pyjwt>=2.8",
        "cryptography>=42",
        "requests>=2.31",
        "flask-babel>=4.0",
    ],
    extras_require={
        "test": ["pytest>=8", "playwright>=1.45", "openapi-core>=0.19",
                 # the field-install test: the Ansible community package (nsenter, chroot and sysctl
                 # come from its collections) and the linter run with the production profile
                 "ansible>=11", "ansible-lint>=25", "pyyaml>=6"],
        # The centre (never on a box): embedded ClickHouse, the server client, schema validation.
        # pyotp: the TOTP second factor of the central admin pages.
        # segno: the OA's class check-in QR code (pure Python, SVG output, no image library).
        "central": ["chdb>=3.0", "line-bot-sdk>=3.10.2", "clickhouse-connect>=0.8", "jsonschema>=4.20", "pyyaml>=6", "pyotp>=2.9",
                    "segno>=1.6"],
    },
    entry_points={"console_scripts": ["skillspot=skillspot.cli:main", "central=central.cli:main"]},
)

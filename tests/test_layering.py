"""The layout is the design: which package may import which, and no SQL on the ledger's tables
outside ledger/. Read from the source with ast, so a new import that breaks a rule fails here."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOX = ["base", "ledger", "lineapi", "netcfg", "portal", "provisioning", "radius", "sessions", "skillspot"]
OURS = set(BOX) | {"simoffice", "central", "syncapi", "boxsync", "health"}

# package -> packages of ours it must never import
FORBIDDEN = {
    "base": OURS - {"base"},
    "portal": {"radius", "skillspot", "simoffice", "central", "provisioning"},
    "provisioning": {"portal", "skillspot", "simoffice", "central"},
    "radius": {"portal", "skillspot", "simoffice", "central"},
    "netcfg": {"portal", "radius", "skillspot", "simoffice", "central", "provisioning", "ledger"},
    "ledger": {"portal", "radius", "netcfg", "sessions", "skillspot", "simoffice", "central", "provisioning"},
    "sessions": {"portal", "provisioning", "skillspot", "simoffice", "central"},
    "lineapi": {"portal", "radius", "netcfg", "sessions", "skillspot", "simoffice", "central"},
    "central": OURS - {"central", "syncapi"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    """file -> top-level packages of ours it imports (at any depth: lazy imports count too)."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & OURS
    return found


# A package's cli.py is where a process is put together (the gate command joins netcfg,
# sessions and the ledger): it may import any box package, never the office or the centre.
COMPOSITION_FORBIDDEN = {"simoffice", "central"}


@pytest.mark.parametrize("package", sorted(p for p in FORBIDDEN if (ROOT / p).is_dir()))
def test_packages_import_only_what_the_design_allows(package):
    bad = {}
    for f, names in imports_of(package).items():
        rule = COMPOSITION_FORBIDDEN & FORBIDDEN[package] if f.endswith("/cli.py") else FORBIDDEN[package]
        if names & rule:
            bad[f] = sorted(names & rule)
    assert not bad, f"{package} imports what it must not: {bad}"


def test_product_code_never_imports_the_simulated_office():
    bad = {f: "simoffice" for p in BOX if (ROOT / p).is_dir() for f, n in imports_of(p).items()
           if "simoffice" in n and not f.startswith("skillspot/cli.py")}
    assert not bad, bad


LEDGER_TABLES = sorted({m for f in (ROOT / "ledger" / "migrations").glob("*.sql")
                        for m in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", f.read_text())})
SQL = re.compile(r"\b(FROM|INTO|UPDATE|JOIN)\s+(" + "|".join(LEDGER_TABLES) + r")\b", re.IGNORECASE)


def test_no_sql_on_ledger_tables_outside_ledger():
    bad = []
    for package in BOX:
        if package == "ledger" or not (ROOT / package).is_dir():
            continue
        for path in (ROOT / package).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if SQL.search(line):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "SQL on ledger tables outside ledger/:\n" + "\n".join(bad)

"""`skillspot sync enrol`, what the installer runs: against a real `central serve` on loopback,
a good code enrols once (then "already enrolled"), a wrong or used code exits 1 naming why."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from sync_util import Centre

pytest.importorskip("chdb")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    c = Centre(tmp_path_factory.mktemp("centre"), threads=2)
    c.start()
    yield c
    c.stop()


def box_config(tmp: Path, url: str, code: str, box_id: str | None = None) -> tuple[Path, str]:
    """A box's skillspot.toml (the example's) with its own id, data dir, centre and code."""
    box_id = box_id or f"enrol-{uuid.uuid4().hex[:6]}"
    ex = tomllib.loads(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    text = text.replace(f'id = "{ex["box"]["id"]}"', f'id = "{box_id}"')
    text = text.replace(f'data_dir = "{ex["box"]["data_dir"]}"', f'data_dir = "{tmp / box_id}"')
    text = text.split("\n[central]\n", 1)[0] + f'\n[central]\nurl = "{url}"\nenrol_code = "{code}"\n'
    conf = tmp / f"{box_id}.toml"
    conf.write_text(text)
    (tmp / box_id).mkdir()
    return conf, box_id


def enrol(conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skillspot.cli", "-c", str(conf), "sync", "enrol"],
                          capture_output=True, text=True, timeout=120)


def test_enrols_once_then_says_already_enrolled(tmp_path, centre):
    conf, box_id = box_config(tmp_path, centre.url, centre.enrol_code())
    r = enrol(conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"enrolled: box {box_id} at {centre.url}"), r.stdout
    key = centre.appdb_rows("SELECT public_key, key_id FROM boxes WHERE box_id = ?", (box_id,))
    assert len(key) == 1 and key[0][1] in r.stdout
    # The public key the centre holds is the one whose private half the box keeps in data_dir.
    from syncapi import signing
    mine = signing.load_or_create_key(tmp_path / box_id / "sync_ed25519.pem")
    assert signing.public_b64(mine.public_key()) == key[0][0]
    again = enrol(conf)
    assert again.returncode == 0 and again.stdout.startswith("already enrolled:"), again.stdout + again.stderr


def test_wrong_and_used_codes_fail_naming_the_cause(tmp_path, centre):
    conf, box_id = box_config(tmp_path, centre.url, "not-a-code-" + uuid.uuid4().hex)
    r = enrol(conf)
    assert r.returncode == 1 and "unknown enrolment code" in r.stderr and "bad_code" in r.stderr, r.stderr
    assert not (tmp_path / box_id / "sync_centre.json").exists()
    code = centre.enrol_code()
    first, _ = box_config(tmp_path, centre.url, code)
    assert enrol(first).returncode == 0
    second, other = box_config(tmp_path, centre.url, code)
    r = enrol(second)
    assert r.returncode == 1 and "already used" in r.stderr and other in r.stderr, r.stderr
    assert centre.appdb_rows("SELECT COUNT(*) FROM boxes WHERE box_id = ?", (other,)) == [(0,)]


def test_unreachable_centre_and_no_centre_are_clear(tmp_path):
    from sync_util import free_port
    conf, _ = box_config(tmp_path, f"http://127.0.0.1:{free_port()}", "x")
    r = enrol(conf)
    assert r.returncode == 1 and "cannot be reached" in r.stderr, r.stderr
    conf, _ = box_config(tmp_path, "", "x")
    r = enrol(conf)
    assert r.returncode == 1 and "[central] url is empty" in r.stderr, r.stderr

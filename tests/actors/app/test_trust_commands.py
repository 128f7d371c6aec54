"""``csms commission`` and ``csms enroll``, run as the operator runs them: real processes,
real files, real SQLite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgpack
from cryptography import x509

from actors.logic.join_proof import token_key
from actors.runtime.storage.enrollment import EnrollmentBook
from broker_bridge.session.certificates import check_chain


def csms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.app.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_commissioning_certifies_an_actor_with_the_root_and_makes_its_site_ca(
        tmp_path: Path) -> None:
    trust, keys = tmp_path / "trust", tmp_path / "local-keys"
    done = csms("commission", "--trust", str(trust), "--key-dir", str(keys),
                "--role", "local_csms", "--days", "3", "--stations", "cs-site1-",
                "local-site1")
    assert done.returncode == 0, done.stderr
    chain = msgpack.unpackb((keys / "local-site1.chain").read_bytes())
    anchor = x509.load_pem_x509_certificate((trust / "root" / "ca.crt").read_bytes())
    credential = check_chain(chain, [anchor], time.time_ns() // 1000)
    assert (credential.address, credential.role) == ("local-site1", "local_csms")
    assert 2.9 * 86_400e6 < credential.not_after_us - time.time_ns() // 1000 < 3.1 * 86_400e6
    assert (keys / "local-site1.key").stat().st_mode & 0o777 == 0o600
    assert (trust / "root" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (trust / "site-local-site1" / "ca.key").is_file()
    # the same root again: it is kept, so what it issued stays valid
    again = csms("commission", "--trust", str(trust), "--key-dir", str(keys),
                 "--role", "operator", "operator")
    assert again.returncode == 0, again.stderr
    assert x509.load_pem_x509_certificate((trust / "root" / "ca.crt").read_bytes()) == anchor
    refused = csms("commission", "--trust", str(trust), "--key-dir", str(keys),
                   "--role", "station", "cs-1")  # stations enroll at their CSMS
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


def test_a_token_is_written_for_the_station_and_kept_hashed_by_its_csms(tmp_path: Path) -> None:
    config = tmp_path / "local.toml"
    state = tmp_path / "local-state"
    config.write_text(f'[local]\naddress = "local-site1"\npassword = "x"\n'
                      f'state_dir = "{state}"\nsite = "site1"\n')
    done = csms("enroll", "--config", str(config), "--token-dir", str(tmp_path / "tokens"),
                "cs-site1-7")
    assert done.returncode == 0, done.stderr
    token_file = tmp_path / "tokens" / "cs-site1-7.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text()

    async def kept() -> list[tuple[bytes, str]]:
        async with EnrollmentBook(state / "enrollment.db") as book:
            rows = await book.db.execute_fetchall("SELECT key, address FROM tokens")
            return [(bytes(k), a) for k, a in rows]

    rows = asyncio.run(kept())
    assert rows == [(token_key(token), "cs-site1-7")]
    assert token.encode() not in (state / "enrollment.db").read_bytes()
    printed = csms("enroll", "--config", str(config), "cs-site1-8")
    assert printed.returncode == 0 and len(printed.stdout.strip()) >= 20
    for bad, message in ((("--config", str(tmp_path / "none.toml"), "cs-1"), "csms enroll"),
                         (("--config", str(config), "not an address!"), "not an actor")):
        refused = csms("enroll", *bad)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr

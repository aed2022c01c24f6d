"""A `nats-server` (with JetStream) that demands TLS and credentials, for transport security
tests: one with mutual TLS and users (password or NKey), one in operator mode that takes
`.creds` files (user JWT and seed) signed by an account it trusts."""

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from temporal_executor.dev.embedded_stack import find_binary
from tests.tls_certs import CertFiles, make_certs

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class NKeyUser:
    seed: bytes
    public_key: str

    @classmethod
    def new(cls, prefix: int = nkeys.PREFIX_BYTE_USER) -> "NKeyUser":
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        signed: bytes = nkeys.from_seed(bytearray(self.seed)).sign(data)
        return signed


@dataclass(frozen=True)
class TlsUsersNats:
    url: str
    certs: CertFiles
    password: str  # of user `bridge`
    nkey_seed_file: Path


@dataclass(frozen=True)
class OperatorNats:
    url: str
    creds_file: Path
    untrusted_creds_file: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def run_nats(config: str, directory: Path, port: int) -> AsyncIterator[None]:
    conf = directory / "nats.conf"
    conf.write_text(config, encoding="utf-8")
    log_path = directory / "nats.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            find_binary("nats"), "-c", str(conf), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        # Ready once it says so: JetStream is enabled for the accounts by then.
        deadline = time.monotonic() + START_TIMEOUT
        while "Server is ready" not in log_path.read_text():
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text())
            await asyncio.sleep(0.05)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@contextlib.asynccontextmanager
async def tls_users_nats(directory: Path) -> AsyncIterator[TlsUsersNats]:
    """Mutual TLS required; users `bridge` (password) and an NKey user."""
    certs = make_certs(directory, "nats")
    nkey_user = NKeyUser.new()
    seed_file = directory / "user.nk"
    seed_file.write_bytes(nkey_user.seed)
    password = base64.urlsafe_b64encode(os.urandom(12)).decode()
    port = _free_port()
    config = f"""
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{directory / "js"}" }}
tls {{
  cert_file: "{certs.server_cert}"
  key_file: "{certs.server_key}"
  ca_file: "{certs.ca}"
  verify: true
}}
authorization {{
  users = [
    {{ user: "bridge", password: "{password}" }}
    {{ nkey: "{nkey_user.public_key}" }}
  ]
}}
"""
    async with run_nats(config, directory, port):
        yield TlsUsersNats(f"nats://127.0.0.1:{port}", certs, password, seed_file)


@contextlib.asynccontextmanager
async def operator_nats(directory: Path) -> AsyncIterator[OperatorNats]:
    """Decentralised auth (operator, accounts, users as JWTs, as `nsc` sets up): a
    `.creds` file of a user of a trusted account, and one of an account the server does
    not know."""
    operator = NKeyUser.new(nkeys.PREFIX_BYTE_OPERATOR)
    system = NKeyUser.new(nkeys.PREFIX_BYTE_ACCOUNT)
    account = NKeyUser.new(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger = NKeyUser.new(nkeys.PREFIX_BYTE_ACCOUNT)
    operator_jwt = _jwt(operator, operator, "operator", {"system_account": system.public_key})
    unlimited = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "leaf": -1}
    unlimited |= {"imports": -1, "exports": -1, "wildcards": True}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    account_jwt = _jwt(operator, account, "account", {"limits": {**unlimited, **jetstream}})
    system_jwt = _jwt(operator, system, "account", {})
    creds, untrusted = directory / "app.creds", directory / "stranger.creds"
    creds.write_text(_creds(account), encoding="utf-8")
    untrusted.write_text(_creds(stranger), encoding="utf-8")
    port = _free_port()
    config = f"""
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{directory / "js"}" }}
operator: "{operator_jwt}"
system_account: "{system.public_key}"
resolver: MEMORY
resolver_preload: {{
  {account.public_key}: "{account_jwt}"
  {system.public_key}: "{system_jwt}"
}}
"""
    async with run_nats(config, directory, port):
        yield OperatorNats(f"nats://127.0.0.1:{port}", creds, untrusted)


def _creds(account: NKeyUser) -> str:
    user = NKeyUser.new()
    limits = {"subs": -1, "data": -1, "payload": -1}
    user_jwt = _jwt(account, user, "user", {"pub": {}, "sub": {}, **limits})
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
    )


def _jwt(issuer: NKeyUser, subject: NKeyUser, kind: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2): claims signed with the issuer's Ed25519 NKey."""
    claims = {
        "jti": base64.b32encode(os.urandom(20)).decode().rstrip("="),
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "sub": subject.public_key,
        "name": kind,
        "nats": {**nats, "type": kind, "version": 2},
    }
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

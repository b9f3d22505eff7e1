"""A real single-member etcd 3.4 (or kvstore) with TLS and/or auth, side by side.

Owns: starting / restarting / stopping one `etcd` process on 127.0.0.1 with
https client URLs from a certificate directory made by scripts/make_certs.py
(member certificate `member`, CA `ca.pem`), `--client-cert-auth`,
`--auth-token` and `--auth-token-ttl`; `etcdctl()` with the matching
--cacert/--cert/--key and an optional --user; `enable_auth()` (root user +
role, `auth enable`).
Never: touches processes it did not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kvstore.testing.etcd_cluster import ETCD_BIN, ETCDCTL_BIN
from kvstore.testing.waiting import free_port, wait_until

ROOT_PASSWORD = "rootpw"


class SecureEtcd:
    """One etcd member; `certs=None` serves plaintext."""

    # The server command (kvstore takes etcd's flags: SecureKvstore below).
    command: tuple[str, ...] = (ETCD_BIN,)

    def __init__(
        self,
        certs: str | Path | None = None,
        *,
        member: str = "kv1",
        client_cert_auth: bool = True,
        auth_token_ttl_s: int = 300,
        auth_token: str = "simple",
        base_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        auto_tls: bool = False,
        client_cert: str = "root",
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="secure-etcd-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.certs = Path(certs) if certs is not None else None
        self.auto_tls = auto_tls  # self-signed server certificate (etcd --auto-tls)
        self.client_cert = client_cert  # etcdctl's default --cert (a CN in `certs`)
        self.member = member
        self.client_cert_auth = client_cert_auth
        self.client_port = free_port()
        self.peer_port = free_port()
        self.args = (
            "--auth-token", auth_token,
            "--auth-token-ttl", str(auth_token_ttl_s),
            *extra_args,
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base_dir / "etcd.log"

    @property
    def scheme(self) -> str:
        return "https" if self.certs or self.auto_tls else "http"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    def cert(self, name: str) -> tuple[str, str]:
        assert self.certs is not None
        return str(self.certs / f"{name}.pem"), str(self.certs / f"{name}-key.pem")

    @property
    def ca_file(self) -> str:
        assert self.certs is not None
        return str(self.certs / "ca.pem")

    def _spawn(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            *self.command,
            "--name", "s1",
            "--data-dir", str(self.base_dir / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"s1={peer}",
            *self.args,
        ]  # fmt: skip
        if self.certs is not None:
            cert, key = self.cert(self.member)
            args += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", self.ca_file]
            if self.client_cert_auth:
                args.append("--client-cert-auth")
        if self.auto_tls:
            args.append("--auto-tls")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def etcdctl(
        self,
        *args: str,
        user: str | None = None,
        cert: str | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """etcdctl against this member (TLS flags with client cert `cert`,
        default `client_cert`)."""
        cmd = [ETCDCTL_BIN, "--endpoints", self.url]
        if self.auto_tls:
            cmd.append("--insecure-skip-tls-verify")
        if self.certs is not None:
            cmd += ["--cacert", self.ca_file]
            c, k = self.cert(cert or self.client_cert)
            cmd += ["--cert", c, "--key", k]
        if user is not None:
            cmd += ["--user", user]
        return subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3", **(env or {})},
        )

    def healthy(self) -> bool:
        return self.etcdctl("endpoint", "health").returncode == 0

    def start(self, timeout: float = 30.0) -> SecureEtcd:
        self._spawn()
        wait_until(self.healthy, timeout=timeout, interval=0.2, what="etcd healthy")
        return self

    def restart(self, timeout: float = 30.0) -> None:
        """kill -9 and start again (in-memory simple tokens are lost)."""
        self.kill()
        self.start(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def enable_auth(self) -> None:
        """root user (password ROOT_PASSWORD) with the root role, auth on."""
        for args in (
            ("user", "add", f"root:{ROOT_PASSWORD}"),
            ("user", "grant-role", "root", "root"),
            ("auth", "enable"),
        ):
            out = self.etcdctl(*args)
            if out.returncode != 0:
                raise RuntimeError(f"etcdctl {' '.join(args)}: {out.stderr.strip()}")

    def stop(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SecureEtcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SecureKvstore(SecureEtcd):
    """The same, served by one kvstore member (same flags, same certificates)."""

    command = (sys.executable, "-m", "kvstore.cli.server_cmd")

"""scripts/make_certs.py: the certificates it makes work with real etcd 3.4
(server TLS, client certificates, CN as the user) and with openssl."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from kvstore.testing.etcd_cluster import etcd_available
from kvstore.testing.secure_etcd import ROOT_PASSWORD, SecureEtcd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_certs.py"


def make_certs(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_makes_a_ca_members_and_clients_and_keeps_the_ca(tmp_path: Path) -> None:
    out = make_certs(tmp_path, "--member", "kv1", "--member", "kv2=kv2.example,10.0.0.2",
                     "--client", "root")  # fmt: skip
    assert out.returncode == 0, out.stderr
    ca_before = (tmp_path / "ca.pem").read_bytes()
    again = make_certs(tmp_path, "--client", "alice")
    assert again.returncode == 0 and "using CA" in again.stdout
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    cert = x509.load_pem_x509_certificate((tmp_path / "kv2.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kv2", "kv2.example", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert oct((tmp_path / "alice-key.pem").stat().st_mode & 0o777) == "0o600"
    if shutil.which("openssl"):
        for name in ("kv1", "kv2", "root", "alice"):
            v = subprocess.run(
                ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                 str(tmp_path / f"{name}.pem")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert v.returncode == 0, v.stdout + v.stderr


def test_bad_member_spec_is_a_usage_error(tmp_path: Path) -> None:
    out = make_certs(tmp_path, "--member", "=x")
    assert out.returncode == 2 and "bad --member" in out.stderr


@pytest.mark.etcd
@pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed")
def test_real_etcd_serves_with_them_and_takes_the_cn_as_user(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert (
        make_certs(certs, "--member", "kv1", "--client", "root", "--client", "alice").returncode
        == 0
    )
    make_certs(tmp_path / "other", "--client", "root")  # same CN, foreign CA
    with SecureEtcd(certs, base_dir=tmp_path / "etcd") as etcd:
        assert etcd.etcdctl("put", "k", "v").returncode == 0
        etcd.enable_auth()
        etcd.etcdctl("user", "add", "alice:apw", user=f"root:{ROOT_PASSWORD}")
        # the root certificate's CN is the user: root may read without --user
        assert etcd.etcdctl("get", "k", "--print-value-only").stdout == "v\n"
        denied = etcd.etcdctl("get", "k", cert="alice")
        assert "permission denied" in denied.stderr
        foreign = subprocess.run(
            ["etcdctl", "--endpoints", etcd.url, "--cacert", etcd.ca_file,
             "--cert", str(tmp_path / "other" / "root.pem"),
             "--key", str(tmp_path / "other" / "root-key.pem"),
             "--dial-timeout", "2s", "get", "k"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert foreign.returncode != 0

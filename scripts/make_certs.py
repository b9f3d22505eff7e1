#!/usr/bin/env python3
"""Make a CA and member / client certificates for a TLS cluster (docker compose
TLS variant, local clusters, tests).

Owns: the command line over kvstore.security.certs (cryptography). Never:
overwrites an existing CA unless --force (members' certificates are re-issued
from the CA already there, so renewing a member does not invalidate the others).

Output in --out (default ./certs):
    ca.pem, ca-key.pem                      the CA (keep ca-key.pem private)
    <member>.pem, <member>-key.pem          server+client usage; SANs: the member
                                            name, its extra hosts, localhost, 127.0.0.1
    <client>.pem, <client>-key.pem          client usage; CN = the user name (etcd
                                            uses the CN as the user with
                                            --client-cert-auth and auth enabled)

Usage:
    python scripts/make_certs.py --out certs --member kv1 --member kv2 --member kv3 \\
        --client root --client alice
    python scripts/make_certs.py --member kv1=kv1.example.com,10.0.0.5 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509

from kvstore.security import certs


def _load_ca(out: Path) -> certs.Issued | None:
    cert, key = out / "ca.pem", out / "ca-key.pem"
    if cert.exists() and key.exists():
        return certs.Issued(cert.read_bytes(), key.read_bytes())
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="certs", help="output directory (created)")
    ap.add_argument(
        "--member", action="append", default=[], metavar="NAME[=HOST,...]",
        help="a member certificate; NAME is also a SAN (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--client", action="append", default=[], metavar="CN",
        help="a client certificate with this Common Name (repeatable)",
    )  # fmt: skip
    ap.add_argument("--days", type=float, default=825, help="validity of issued certificates")
    ap.add_argument("--ca-days", type=float, default=3650, help="validity of a new CA")
    ap.add_argument("--ca-cn", default="kvstore CA", help="Common Name of a new CA")
    ap.add_argument("--force", action="store_true", help="make a new CA even if one exists")
    ap.add_argument(
        "--readable-keys", action="store_true",
        help="keys mode 0644 instead of 0600 (bind mounts read by another uid in containers)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ca = None if args.force else _load_ca(out)
    if ca is None:
        ca = certs.make_ca(args.ca_cn, days=args.ca_days)
        ca.write(out / "ca.pem", out / "ca-key.pem")
        print(f"made CA {out / 'ca.pem'}")
    else:
        try:
            ca.key  # noqa: B018 - fails on a bad key file
        except (ValueError, TypeError, AssertionError):
            print(f"error: {out / 'ca-key.pem'} is not an unencrypted EC key", file=sys.stderr)
            return 1
        print(f"using CA {out / 'ca.pem'}")
    for spec in args.member:
        name, _, extra = spec.partition("=")
        if not name:
            print(f"error: bad --member {spec!r}", file=sys.stderr)
            return 2
        hosts = [name, *[h for h in extra.split(",") if h], "localhost", "127.0.0.1"]
        hosts = list(dict.fromkeys(hosts))
        certs.issue(ca, name, hosts, days=args.days).write(
            out / f"{name}.pem", out / f"{name}-key.pem"
        )
        print(f"made member {name}: {out / (name + '.pem')} (SANs {', '.join(hosts)})")
    for cn in args.client:
        certs.issue(ca, cn, days=args.days, server=False).write(
            out / f"{cn}.pem", out / f"{cn}-key.pem"
        )
        print(f"made client {cn}: {out / (cn + '.pem')}")
    if args.readable_keys:
        for key in out.glob("*-key.pem"):
            if key.name != "ca-key.pem":
                key.chmod(0o644)
    return 0


def describe(path: str) -> str:
    """One line about a certificate (used by the tests and for humans)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    return f"CN={cn} issuer={cert.issuer.rfc4514_string()} until={cert.not_valid_after_utc}"


if __name__ == "__main__":
    sys.exit(main())

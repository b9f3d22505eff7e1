"""JWT tokens are interchangeable with etcd 3.4's: a token etcd signs resolves
in JwtTokenProvider (same claims), and a token we sign is accepted by etcd
started with `--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256`."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kvstore.auth.tokens import JwtTokenProvider, parse_auth_token
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.etcd_cluster import etcd_available
from kvstore.testing.secure_etcd import ROOT_PASSWORD, SecureEtcd

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]


def test_tokens_cross_verify_with_etcd(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    spec = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    with SecureEtcd(auth_token=spec, base_dir=tmp_path / "etcd") as etcd:
        etcd.enable_auth()
        ch = grpc.insecure_channel(etcd.endpoint)
        auth, kv = rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)
        theirs = auth.Authenticate(
            rpc_pb2.AuthenticateRequest(name="root", password=ROOT_PASSWORD)
        ).token
        ours = parse_auth_token(spec, lambda: 1)
        assert isinstance(ours, JwtTokenProvider)
        info = ours.info(theirs)
        assert info is not None and info.username == "root" and info.revision >= 1
        # a token signed here, at the revision etcd issued at, is accepted there
        mine = ours.assign("root", info.revision)
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), metadata=(("token", mine),))
        resp = kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=(("token", mine),))
        assert resp.kvs[0].value == b"v"
        forged = JwtTokenProvider("RS256", _other_key(), None).assign("root", info.revision)
        with pytest.raises(grpc.RpcError) as exc:
            kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=(("token", forged),))
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ch.close()


def _other_key() -> bytes:
    return rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

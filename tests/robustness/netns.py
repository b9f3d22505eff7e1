"""Network namespaces for robustness runs: one per member, one for the
clients, all on a bridge in a hub namespace, with 10.x addresses that exist
only inside these namespaces.

Owns: creating and tearing down the namespaces and veth pairs (names carry
the creating pid, so parallel runs never collide), and the per-member
nftables table `rob` that cuts links or drops packets.
Never: adds an address, route or rule to the host's own namespace (only the
veth ends pass through it for a moment while being moved); never touches a
namespace it did not create.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.77.0"
NFT_TABLE = "rob"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = f"kvprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", NFT_TABLE)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns / nft not usable: {getattr(exc, 'stderr', exc)}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Net:
    tag: str
    members: list[str]  # namespace per member
    member_ips: list[str]
    client: str
    client_ip: str
    hub: str
    _created: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, size: int = 3) -> Net:
        tag = f"kr{os.getpid() % 100000}"
        net = cls(
            tag=tag,
            members=[f"{tag}m{i + 1}" for i in range(size)],
            member_ips=[f"{SUBNET}.{11 + i}" for i in range(size)],
            client=f"{tag}c",
            client_ip=f"{SUBNET}.100",
            hub=f"{tag}h",
        )
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        return net

    def _ns(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", ns, *args, check=check)

    def _build(self) -> None:
        _run("ip", "netns", "add", self.hub)
        self._created.append(self.hub)
        self._ns(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        self._ns(self.hub, "ip", "link", "set", "br0", "up")
        self._ns(self.hub, "ip", "link", "set", "lo", "up")
        for i, (ns, ip) in enumerate(
            [*zip(self.members, self.member_ips, strict=True), (self.client, self.client_ip)]
        ):
            _run("ip", "netns", "add", ns)
            self._created.append(ns)
            inner, outer = f"{self.tag}i{i}", f"{self.tag}o{i}"
            _run("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", outer, "netns", self.hub)
            self._ns(ns, "ip", "link", "set", inner, "name", "eth0")
            self._ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            self._ns(ns, "ip", "link", "set", "eth0", "up")
            self._ns(ns, "ip", "link", "set", "lo", "up")
            self._ns(self.hub, "ip", "link", "set", outer, "master", "br0")
            self._ns(self.hub, "ip", "link", "set", outer, "up")
        for ns in self.members:
            self._ns(ns, "nft", "add", "table", "inet", NFT_TABLE)
            for chain, hook in (("in", "input"), ("out", "output")):
                self._ns(
                    ns, "nft", "add", "chain", "inet", NFT_TABLE, chain,
                    f"{{ type filter hook {hook} priority 0 ; policy accept ; }}",
                )  # fmt: skip

    def destroy(self) -> None:
        # Deleting a namespace deletes its veth ends (and so their peers).
        for ns in reversed(self._created):
            _run("ip", "netns", "del", ns, check=False)
        self._created.clear()


# ------------------------------------------------- link control (any namespace)
def nft(ns: str, *rule: str) -> None:
    _run("ip", "netns", "exec", ns, "nft", *rule)


def cut(ns: str, peer_ips: list[str]) -> None:
    """Drop every packet between member namespace `ns` and `peer_ips`."""
    for ip in peer_ips:
        nft(ns, "add", "rule", "inet", NFT_TABLE, "in", "ip", "saddr", ip, "drop")
        nft(ns, "add", "rule", "inet", NFT_TABLE, "out", "ip", "daddr", ip, "drop")


def lossy(ns: str, peer_ips: list[str], percent: int) -> None:
    """Drop `percent`% of the packets between `ns` and `peer_ips`, at random
    (netem is not always there; nftables' numgen is)."""
    for ip in peer_ips:
        for chain, field_ in (("in", "saddr"), ("out", "daddr")):
            nft(
                ns, "add", "rule", "inet", NFT_TABLE, chain, "ip", field_, ip,
                "numgen", "random", "mod", "100", "<", str(percent), "drop",
            )  # fmt: skip


def heal(ns: str) -> None:
    for chain in ("in", "out"):
        nft(ns, "flush", "chain", "inet", NFT_TABLE, chain)

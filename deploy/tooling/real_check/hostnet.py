"""What the node changes on the host's network and mounts, and how it is all put back.

The kubelet, containerd and the CNI bridge leave traces a stopped process does not take
with it: the bridge, the pods' network namespaces and veths, the IP-masquerade chains
the bridge plugin wrote, bind mounts under the kubelet's folder and each sandbox's shm.
``clean()`` removes exactly those that belong to this node (found by its folder, its
bridge and its pod range), so it is safe to run before a start and after a stop.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


# The CNI network's name (deploy/k8s/real-check/node/10-shop-bridge.conflist), which the
# bridge plugin writes into the comment of each of its rules.
NETWORK = "shop-pods"


@dataclass
class HostNetwork:
    work: Path
    bridge: str
    pod_cidr: str

    def prepare(self) -> None:
        # Pods reach Services and the outside through the host: forwarding must be on, and
        # bridged traffic must pass iptables, where kube-proxy and NetworkPolicy live.
        # This kernel has br_netfilter and overlay built in; elsewhere, load them first.
        if shutil.which("modprobe"):
            sh("modprobe", "br_netfilter")
            sh("modprobe", "overlay")
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
        ):
            path = Path("/proc/sys") / key
            if path.exists() and path.read_text().strip() != value:
                path.write_text(value)

    def mounts(self) -> list[str]:
        """Mount points under the node's folder, deepest first."""
        root = str(self.work.resolve())
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                points.append(point)
        return sorted(set(points), key=len, reverse=True)

    def namespaces(self) -> list[str]:
        """The CNI network namespaces containerd made for this node's sandboxes."""
        found = []
        for line in sh("ip", "netns", "list").stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("cni-"):
                found.append(name)
        return found

    def clean(self) -> None:
        self.kill_stragglers()
        for point in self.mounts():
            if sh("umount", point).returncode != 0:
                sh("umount", "-l", point)
        for name in self.namespaces():
            sh("ip", "netns", "delete", name)
        # containerd 1.6 keeps the namespaces' mounts in /run/netns; ip removes both.
        sh("ip", "link", "delete", self.bridge)
        self._masquerade_chains()
        # kube-router's policy sets; its own --cleanup-config leaves them once the rules
        # that used them are gone.
        for name in sh("ipset", "list", "-n").stdout.split():
            if name.startswith("KUBE-"):
                sh("ipset", "destroy", name)

    def _masquerade_chains(self) -> None:
        """The kernel rules of this node: kube-proxy's, kubelet's and kube-router's KUBE-*
        chains (their own clean-up flags leave some), and the bridge plugin's per-pod CNI-*
        chains, known by the network's name in their comment (podman's are left alone).
        """
        for table in ("filter", "nat", "mangle", "raw"):
            rules = sh("iptables", "-t", table, "-S").stdout.splitlines()
            ours = {
                rule.split()[-1] for rule in rules if NETWORK in rule and rule.split()[-2] == "-j"
            }
            ours |= {rule.split()[1] for rule in rules if rule.startswith("-N KUBE-")}
            for rule in rules:
                # Quoted comments: split as the shell would, or -D matches nothing.
                words = shlex.split(rule)
                if not rule.startswith("-A ") or words[1] in ours:
                    continue
                if NETWORK in rule or any(word in ours for word in words):
                    sh("iptables", "-t", table, "-D", *words[1:])
            for chain in ours:
                sh("iptables", "-t", table, "-F", chain)
            for chain in ours:
                sh("iptables", "-t", table, "-X", chain)

    def processes(self) -> dict[int, str]:
        """Processes whose command line names the node's folder (shims, servers)."""
        root = str(self.work.resolve())
        found = {}
        mine = _ancestors()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in mine:
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(root.encode() in arg for arg in argv):
                found[int(proc.name)] = argv[0].decode(errors="replace")
        return found

    def kill_stragglers(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def leftovers(self) -> list[str]:
        """What is still on the host after ``clean()``; empty when it worked."""
        found = [f"process {pid} {name}" for pid, name in self.processes().items()]
        found += [f"mount {point}" for point in self.mounts()]
        found += [f"netns {name}" for name in self.namespaces()]
        if sh("ip", "link", "show", self.bridge).returncode == 0:
            found.append(f"bridge {self.bridge}")
        for table in ("filter", "nat"):
            for rule in sh("iptables", "-t", table, "-S").stdout.splitlines():
                if "KUBE-" in rule or NETWORK in rule:
                    found.append(f"iptables -t {table}: {rule}")
        found += [
            f"ipset {name}"
            for name in sh("ipset", "list", "-n").stdout.split()
            if name.startswith("KUBE-")
        ]
        return found


def _ancestors() -> set[int]:
    """This process and those above it, which may name the folder in their arguments."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found

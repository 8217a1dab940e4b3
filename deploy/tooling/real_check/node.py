"""One real Kubernetes node on this machine: control plane, containerd, kubelet, kube-proxy.

kind and minikube cannot run here (no registry for their node images, no systemd), so
the node is assembled from its parts, each a host process: etcd 3.6, kube-apiserver,
kube-controller-manager, kube-scheduler, kubelet and kube-proxy (built from the Go
module proxy at the version in deploy/k8s/cluster-check/kube/go.mod), Debian's
containerd with runc and its CNI plugins (a bridge), and kube-router's network-policy
controller. The configuration files are in deploy/k8s/real-check/node/. Everything the
node keeps lives in one folder, and ``down()`` leaves nothing behind: no process, mount,
network namespace, iptables rule or ipset of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from deploy.tooling.real_check import pki
from deploy.tooling.real_check.hostnet import HostNetwork

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = REPO_ROOT / "deploy" / "k8s" / "real-check" / "node"
BIN = REPO_ROOT / ".stack" / "tools" / "bin"
NODE_NAME = "shop-node"
CLUSTER_CIDR = "10.244.0.0/16"
# The controller-manager gives the first node the first /24; the bridge hands out those.
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
# Where pods reach the API server behind its Service: the bridge's own address, a private
# one on the port kind uses, as on a kind node (172.18.0.x:6443) or minikube's VM
# (192.168.49.2:8443). The manifests' policy lets Prometheus reach exactly such addresses.
POD_GATEWAY = "10.244.0.1"
API_PORT = 6443
# The memory above a 6 GiB minikube VM is held back, so pods see what its users have.
MINIKUBE_MEMORY = 6 * 1024**3


class NodeError(RuntimeError):
    pass


def host_ip() -> str:
    """The address of the default route: what pods and the API server reach the host at."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.254", 9))
        return str(probe.getsockname()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reserved_memory() -> str:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(total - MINIKUBE_MEMORY, 0) // 1024**2}Mi"


@dataclass
class Node:
    work: Path
    ip: str = field(default_factory=host_ip)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"
        self.pki_dir = self.work / "pki"
        self.kubeconfigs = self.work / "kubeconfig"
        self.api_port = API_PORT
        self.server = f"https://{self.ip}:{self.api_port}"
        self.network = HostNetwork(self.work, bridge="shop0", pod_cidr=POD_CIDR)
        self.pids = self.work / "pids"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfigs / "admin"

    @property
    def containerd_socket(self) -> Path:
        return self.work / "containerd" / "containerd.sock"

    # --- files ---------------------------------------------------------------------------

    def render(self, name: str, target: Path) -> Path:
        text = Template((CONFIG / name).read_text()).substitute(
            state=self.work,
            pki=self.pki_dir,
            pod_cidr=POD_CIDR,
            cluster_cidr=CLUSTER_CIDR,
            node_name=NODE_NAME,
            reserved_memory=reserved_memory(),
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def prepare(self) -> None:
        if self.work.exists():
            self.down()
            shutil.rmtree(self.work)
        for folder in (self.logs, self.kubeconfigs, self.work / "pod-logs"):
            folder.mkdir(parents=True)
        ca = pki.Authority(self.pki_dir)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            client=False,
            server_names=(
                API_SERVICE_IP,
                POD_GATEWAY,
                self.ip,
                "127.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ),
        )
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        ca.issue("kubelet-serving", f"system:node:{NODE_NAME}", server_names=(self.ip, NODE_NAME))
        ca.service_account_key()
        for identity in (
            pki.Identity("admin", "shop-admin", ("system:masters",)),
            pki.Identity("controller-manager", "system:kube-controller-manager"),
            pki.Identity("scheduler", "system:kube-scheduler"),
            pki.Identity("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)),
            pki.Identity("kube-proxy", "system:kube-proxy"),
            pki.Identity("kube-router", "kube-router"),
        ):
            pki.kubeconfig(self.kubeconfigs / identity.file, self.server, ca, identity)
        self.render("containerd.toml", self.work / "containerd.toml")
        self.render("10-shop-bridge.conflist", self.work / "cni" / "net.d" / "10-shop.conflist")
        self.render("kubelet.yaml", self.work / "kubelet.yaml")
        self.render("kube-proxy.yaml", self.work / "kube-proxy.yaml")

    # --- processes -----------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        # A kept node (--keep) is stopped by a later run, which finds its processes here.
        self.pids.mkdir(parents=True, exist_ok=True)
        (self.pids / f"{len(list(self.pids.iterdir())):02d}-{name}").write_text(str(process.pid))

    def alive(self) -> list[str]:
        """The names of processes that exited; the node is broken if any did."""
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if dead := self.alive():
                raise NodeError(
                    f"{', '.join(dead)} exited while waiting for {what}; see {self.logs}"
                )
            time.sleep(0.5)
        raise NodeError(f"{what} not ready within {timeout:g}s; see {self.logs}")

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def up(self) -> None:
        self.prepare()
        self.network.prepare()
        p = self.pki_dir
        etcd_port, peer_port = free_port(), free_port()
        self.start(
            "etcd",
            [
                str(BIN / "etcd-3.6"),
                f"--data-dir={self.work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--quota-backend-bytes=1073741824",
            ],
        )
        self.start(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--advertise-address={POD_GATEWAY}",
                "--bind-address=0.0.0.0",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={p / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-key-file={p / 'sa.key'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
            ],
        )
        self.wait_until(
            "kube-apiserver", lambda: self.kubectl("get", "--raw=/readyz").returncode == 0, 120
        )
        self.start(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfigs / 'controller-manager'}",
                f"--authentication-kubeconfig={self.kubeconfigs / 'controller-manager'}",
                f"--authorization-kubeconfig={self.kubeconfigs / 'controller-manager'}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--use-service-account-credentials=true",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={CLUSTER_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--node-cidr-mask-size=24",
                "--leader-elect=false",
                "--controllers=*,bootstrapsigner,tokencleaner",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self.start(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfigs / 'scheduler'}",
                f"--authentication-kubeconfig={self.kubeconfigs / 'scheduler'}",
                f"--authorization-kubeconfig={self.kubeconfigs / 'scheduler'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self.start("containerd", ["containerd", f"--config={self.work / 'containerd.toml'}"])
        self.wait_until("containerd", self.containerd_socket.exists, 60)

    def start_node_agents(self) -> None:
        """kubelet, the volume provisioner, kube-proxy and kube-router; the images they
        need are imported first."""
        self.start(
            "kubelet",
            [
                str(BIN / "kubelet"),
                f"--config={self.work / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubeconfigs / 'kubelet'}",
                f"--root-dir={self.work / 'kubelet'}",
                f"--cert-dir={self.work / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.ip}",
            ],
        )
        self.start(
            "volume-provisioner",
            [
                sys.executable,
                "-m",
                "deploy.tooling.real_check.volumes",
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--root={self.work / 'volumes'}",
                f"--node={NODE_NAME}",
            ],
        )
        self.start(
            "kube-proxy",
            [str(BIN / "kube-proxy"), f"--config={self.work / 'kube-proxy.yaml'}"],
        )
        self.start(
            "kube-router",
            [
                str(BIN / "kube-router"),
                f"--kubeconfig={self.kubeconfigs / 'kube-router'}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--enable-ipv6=false",
                "--metrics-port=0",
                f"--health-port={free_port()}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    # --- the way back --------------------------------------------------------------------

    def recorded(self) -> dict[str, int]:
        """Every process this node's folder says it started, by name, in start order."""
        if not self.pids.is_dir():
            return {}
        found = {}
        for path in sorted(self.pids.iterdir()):
            found[path.name.split("-", 1)[1]] = int(path.read_text())
        return found

    def stop(self, name: str, grace: float = 10) -> None:
        process = self.processes.pop(name, None)
        pid = self.recorded().get(name)
        for path in self.pids.glob(f"*-{name}"):
            path.unlink()
        if pid is None:
            return
        # Each process leads its own session, so its group holds its children too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _running(pid, process):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if process is not None:
            process.wait()

    def down(self) -> None:
        """Every process, container, mount and rule of the node's, in reverse order."""
        for name in ("kube-router", "kube-proxy", "volume-provisioner", "kubelet"):
            self.stop(name)
        if "containerd" in self.recorded():
            self.remove_containers()
        for name in reversed(list(self.recorded())):
            self.stop(name)
        self.cleanup_rules()
        self.network.clean()

    def remove_containers(self) -> None:
        tasks = self.ctr("tasks", "list", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal=SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while self.ctr("tasks", "list", "-q", check=False).stdout.split() and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        for task in tasks:
            self.ctr("tasks", "delete", "--force", task, check=False)
        containers = self.ctr("containers", "list", "-q", check=False).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False)

    def cleanup_rules(self) -> None:
        """kube-proxy's own clean-up; hostnet.py removes what it and kube-router leave
        (kube-router 2.1's --cleanup-config panics in its IPVS part on this kernel)."""
        kube_proxy = BIN / "kube-proxy"
        if kube_proxy.exists():
            subprocess.run(
                [str(kube_proxy), "--cleanup", f"--config={self.work / 'kube-proxy.yaml'}"],
                capture_output=True,
                check=False,
                timeout=60,
            )


def _running(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

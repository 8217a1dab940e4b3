"""`make k8s-real-check`: the manifests' containers in real pods on a real node.

The steps, each printed with its time:

1. cluster: the node of node.py up (control plane, containerd), its certificates its own;
2. images: the shop's three images and the infrastructure's stand-ins (images.py) built
   and imported into containerd, as `make up` loads them into kind; then kubelet, kube-proxy,
   kube-router, CoreDNS and the volume provisioner;
3. deploy: `make up`'s own ``deploy()`` with the minikube overlay (its smoke Job included);
4. ready: every pod Ready, PostgreSQL's six databases (the services' and the gateway's),
   etcd's three members, Kafka's topics, every service and gateway replica in etcd,
   Prometheus scraping, Zipkin healthy;
5. smoke: the smoke Job's order CONFIRMED and its audit clean (inside ``deploy()``);
   then the storefront: a real browser through `make up`'s port-forward signs in, buys,
   watches the order turn CONFIRMED live and signs out (storefront.py);
6. load: `make load-k8s`'s Job with a short profile, its report copied out;
7. policy: an allowed flow passes and the denied ones (ingress, egress; the gateway to
   Kafka) are refused;
8. recoveries: a deleted service pod replaced and registered again; a deleted kafka-0
   and postgres-0 back with their data; the smoke Job again, so the saga and the audit
   pass after them;
9. down: nothing left running (processes, containers, mounts, rules).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from deploy.tooling import k8s
from deploy.tooling.image import build, content_tags
from deploy.tooling.real_check import probes
from deploy.tooling.real_check.images import build_all
from deploy.tooling.real_check.node import NODE_NAME, Node, NodeError
from deploy.tooling.real_check.usage import UsageSampler
from devstack.containers import Engine

ALLOWED = probes.Flow("deploy/payment", "kafka", 9092)
# product takes calls from order, the gateway and clients only; a client reaches no
# broker, nor does the gateway (it uses no Kafka).
DENIED = (
    probes.Flow("deploy/payment", "product", 50051),
    probes.Flow("deploy/shopctl", "kafka", 9092),
    probes.Flow("deploy/gateway", "kafka", 9092),
)


class CheckFailed(RuntimeError):
    pass


class Steps:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"k8s-real-check: [{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    def run(self, name: str, action: Callable[[], str]) -> str:
        began = time.monotonic()
        self.say(f"{name}: ...")
        result = action()
        self.say(f"{name}: {result} ({time.monotonic() - began:.1f}s)")
        return result


class RealCheck:
    def __init__(self, work: Path, reports: Path, profile: str, load_args: str) -> None:
        self.node = Node(work)
        self.state = work / "make-up"
        self.reports = reports
        self.profile = profile
        self.load_args = load_args
        self.steps = Steps()
        self.tags: dict[str, str] = {}
        self.kubectl = k8s.Kubectl("shop-node")

    # --- 1 and 2 ----------------------------------------------------------------------

    def cluster(self) -> str:
        self.node.up()
        os.environ["KUBECONFIG"] = str(self.node.admin_kubeconfig)
        return f"control plane and containerd up; API at {self.node.server}"

    def images(self) -> str:
        archives = build_all(self.node.work / "images")
        engine = Engine.detect()
        self.tags = content_tags(engine, build(engine))
        ours = []
        for image, tag in self.tags.items():
            archive = self.node.work / "images" / f"{image.rpartition('/')[2]}.tar"
            archive.unlink(missing_ok=True)
            engine.run("save", "--output", str(archive), f"{image}:{tag}")
            ours.append(archive)
        for archive in (*archives, *ours):
            self.node.import_image(archive)
        pinned = ", ".join(f"{image}:{tag}" for image, tag in self.tags.items())
        return f"{len(archives)} stand-ins and {pinned} imported into containerd"

    def node_agents(self) -> str:
        node = self.node
        node.start_node_agents()
        node.wait_until(
            "the node's registration",
            lambda: node.kubectl("get", "node", NODE_NAME).returncode == 0,
            120,
        )
        addons = k8s.REPO_ROOT / "deploy" / "k8s" / "real-check" / "node" / "addons.yaml"
        applied = node.kubectl("apply", "-f", str(addons))
        if applied.returncode != 0:
            raise CheckFailed(f"the add-ons were refused: {applied.stderr}")
        node.wait_until(
            "node Ready",
            lambda: (
                "True"
                in node.kubectl(
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                ).stdout
            ),
            180,
        )
        node.wait_until(
            "CoreDNS",
            lambda: (
                node.kubectl(
                    "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=5s"
                ).returncode
                == 0
            ),
            240,
        )
        allocatable = node.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.allocatable}"
        ).stdout
        return f"{NODE_NAME} Ready, CoreDNS serving; allocatable {allocatable}"

    # --- 3 to 5 -----------------------------------------------------------------------

    def deploy(self) -> str:
        k8s.deploy(self.kubectl, "minikube", self.tags, self.state, smoke_log=False)
        # The battery's verdict, e.g. "14 of 14 attacks refused with nothing changed".
        trust = self.kubectl("logs", "job/trust-check", capture=True).stdout.strip()
        verdict = trust.splitlines()[-1] if trust else "no verdict"
        return (
            "make up's deploy() with overlays/minikube: rolled out, smoke Job passed, "
            f"trust-check: {verdict}"
        )

    def ready(self) -> str:
        ready, total = probes.wait_all_ready(self.kubectl, 300)
        missing = probes.DATABASES - probes.databases(self.kubectl)
        if missing:
            raise CheckFailed(f"databases missing: {sorted(missing)}")
        members = probes.etcd_members(self.kubectl)
        leaders = {str(m["Status"]["leader"]) for m in members if isinstance(m["Status"], dict)}
        if len(members) != 3 or len(leaders) != 1:
            raise CheckFailed(f"etcd: {len(members)} members answered, leaders {leaders}")
        missing_topics = probes.TOPICS - probes.topics(self.kubectl)
        if missing_topics:
            raise CheckFailed(f"topics missing: {sorted(missing_topics)}")
        registered = probes.registered_instances(self.kubectl)
        for service in k8s.DEPLOYMENTS:
            wanted = probes.ready_replicas(self.kubectl, service)
            if registered.get(service, 0) != wanted:
                raise CheckFailed(
                    f"{service}: {wanted} ready, {registered.get(service, 0)} in etcd"
                )
        replicas = sum(probes.ready_replicas(self.kubectl, s) for s in k8s.DEPLOYMENTS)
        targets = self.wait_for_scrapes(replicas)
        if not probes.zipkin_healthy(self.kubectl):
            raise CheckFailed("Zipkin is not UP")
        # The default ratio (0.1 %) would leave a short load without a trace to look for.
        applied = probes.trace_everything(self.kubectl)
        return (
            f"pods ready {ready}/{total}; {len(probes.DATABASES)} databases; etcd 3 members,"
            " 1 leader; "
            f"{len(probes.TOPICS)} topics; {replicas} replicas registered; Prometheus scrapes "
            f"{targets}; Zipkin UP; {applied}"
        )

    def wait_for_traces(self, timeout: float = 60) -> set[str]:
        """The smoke order's spans reach Zipkin in the exporters' next batches."""
        wanted = {"order", "inventory", "payment"}
        deadline = time.monotonic() + timeout
        while True:
            traced = probes.traced_services(self.kubectl)
            if traced >= wanted:
                return traced
            if time.monotonic() > deadline:
                raise CheckFailed(f"Zipkin holds spans of {sorted(traced)}, not of {wanted}")
            time.sleep(5)

    def wait_for_scrapes(self, replicas: int, timeout: float = 120) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                targets = probes.scrape_targets(self.kubectl)
            except probes.ProbeError:
                targets = {}
            if sum(targets.values()) >= replicas:
                return targets
            if time.monotonic() > deadline:
                raise CheckFailed(f"Prometheus scrapes {targets} of {replicas} service pods")
            time.sleep(5)

    # --- 6 to 8 -----------------------------------------------------------------------

    def load(self) -> str:
        code = k8s.run_load_job(
            self.kubectl, self.tags, self.profile, self.load_args, self.reports, self.state
        )
        if code != 0:
            raise CheckFailed(f"the load Job's profile {self.profile} failed (exit {code})")
        traced = self.wait_for_traces()
        return f"profile {self.profile} passed; Zipkin holds traces of {sorted(traced)}"

    def storefront(self) -> str:
        from deploy.tooling.real_check.storefront import check_storefront

        return check_storefront(self.kubectl, self.reports)

    def policy(self) -> str:
        if not probes.flow_open(self.kubectl, ALLOWED):
            raise CheckFailed(f"allowed flow refused: {ALLOWED}")
        for flow in DENIED:
            if probes.flow_open(self.kubectl, flow):
                raise CheckFailed(f"denied flow passed: {flow} (NetworkPolicy not enforced)")
        return f"allowed {ALLOWED} open; denied {', '.join(map(str, DENIED))} refused"

    def recoveries(self) -> str:
        from deploy.tooling.real_check.recovery import recover_all

        return recover_all(self.kubectl, self.state, self.tags)

    # --- the whole run ----------------------------------------------------------------

    def run(self) -> str:
        steps = self.steps
        steps.run("cluster", self.cluster)
        steps.run("images", self.images)
        steps.run("node", self.node_agents)
        steps.run("deploy", self.deploy)
        steps.run("ready", self.ready)
        steps.run("storefront", self.storefront)
        steps.run("load", self.load)
        steps.run("policy", self.policy)
        steps.run("recoveries", self.recoveries)
        _, total = probes.wait_all_ready(self.kubectl, 300)
        return (
            f"k8s-real-check: pods ready {total}/{total} · smoke ok · storefront ok · load ok · "
            "policy enforced · recoveries ok · audit ok"
        )

    def explain_failure(self) -> None:
        """The pods that are not ready: their events and their last log lines."""
        try:
            _, _, waiting = probes.long_running_readiness(self.kubectl)
        except (probes.ProbeError, k8s.ClusterError, ValueError):
            # The API server itself may be what failed.
            waiting = []
        self.kubectl("get", "pods", "-o", "wide", check=False)
        failed_jobs = self.kubectl(
            "get",
            "pods",
            "-l",
            "job-name",
            "--field-selector=status.phase=Failed",
            "-o",
            "jsonpath={.items[*].metadata.name}",
            capture=True,
            check=False,
        ).stdout.split()
        for pod in [*waiting, *failed_jobs]:
            print(f"--- {pod}: events and logs", flush=True)
            self.kubectl("describe", "pod", pod, check=False)
            self.kubectl("logs", pod, "--all-containers", "--tail=40", check=False)
            self.kubectl(
                "logs", pod, "--all-containers", "--previous", "--tail=20", check=False, quiet=True
            )

    def down(self) -> list[str]:
        self.node.down()
        return self.node.network.leftovers()


def run_check(work: Path, reports: Path, profile: str, load_args: str, keep: bool) -> int:
    check = RealCheck(work, reports, profile, load_args)
    sampler = UsageSampler()
    sampler.start()
    code = 1
    try:
        summary = check.run()
        code = 0
    except (CheckFailed, NodeError, k8s.ClusterError, probes.ProbeError) as error:
        check.steps.say(f"FAILED: {error}")
        check.explain_failure()
        check.steps.say(
            f"every pod's log: {work / 'pod-logs'}; the node's: {work / 'logs'} "
            "(kept until the next run)"
        )
        summary = ""
    finally:
        if keep:
            check.steps.say(f"--keep: the node stays up; KUBECONFIG={check.node.admin_kubeconfig}")
        else:
            leftovers = check.down()
            check.steps.say(f"down: node stopped; {len(leftovers)} leftovers")
            if leftovers:
                check.steps.say("left behind: " + "; ".join(leftovers[:20]))
                code = 1
        sampler.stop()
        check.steps.say(sampler.summary())
    if code == 0:
        print(summary, flush=True)
    return code

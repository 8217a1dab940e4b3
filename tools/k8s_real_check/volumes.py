"""The node's volume provisioner: a host folder for every claim of the default class.

kind's local-path provisioner and minikube's hostpath provisioner both answer a claim
with a world-writable folder on the node, bound as a hostPath volume, which the kubelet
does not re-own for a pod's fsGroup. This does the same for the StorageClass `standard`
(deploy/k8s/real-check/node/addons.yaml), so the StatefulSets meet the volumes a user's
laptop cluster gives them. A claim's folder outlives its pods, which is what lets a
deleted `postgres-0` or `kafka-0` come back to its data.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

PROVISIONER = "shop.example/host-folder"
Kubectl = Callable[..., CompletedProcess[str]]


def pending_claims(kubectl: Kubectl) -> list[dict[str, str]]:
    out = kubectl("get", "pvc", "--all-namespaces", "-o", "json")
    if out.returncode != 0:
        return []
    claims = []
    for item in json.loads(out.stdout).get("items", []):
        meta, spec = item["metadata"], item["spec"]
        if item.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
            continue
        if spec.get("storageClassName") != "standard":
            continue
        claims.append(
            {
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "size": spec["resources"]["requests"]["storage"],
            }
        )
    return claims


def volume_manifest(claim: dict[str, str], folder: Path, node: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{claim['uid']}",
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": claim["size"]},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "standard",
                "claimRef": {
                    "namespace": claim["namespace"],
                    "name": claim["name"],
                    "uid": claim["uid"],
                },
                "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [node],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }
    )


class Provisioner:
    """Polls for claims every second in a thread, until ``stop()``."""

    def __init__(self, kubectl: Kubectl, root: Path, node: str) -> None:
        self.kubectl = kubectl
        self.root = root
        self.node = node
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="provisioner", daemon=True)
        self.made: list[str] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)

    def provision_once(self) -> None:
        for claim in pending_claims(self.kubectl):
            folder = self.root / f"{claim['namespace']}-{claim['name']}-{claim['uid'][:8]}"
            folder.mkdir(parents=True, exist_ok=True)
            # World-writable, as kind's and minikube's provisioners make them.
            folder.chmod(0o777)
            manifest = volume_manifest(claim, folder, self.node)
            if self.kubectl("apply", "-f", "-", stdin=manifest).returncode == 0:
                self.made.append(claim["name"])

    def loop(self) -> None:
        while not self.done.wait(1.0):
            self.provision_once()

"""The node's volume provisioner: a host folder for every claim of the default class.

kind's local-path provisioner and minikube's hostpath provisioner both answer a claim
with a world-writable folder on the node, bound as a hostPath volume, which the kubelet
does not re-own for a pod's fsGroup. This does the same for the StorageClass `standard`
(deploy/k8s/real-check/node/addons.yaml), so the StatefulSets meet the volumes a user's
laptop cluster gives them. A claim's folder outlives its pods, which is what lets a
deleted `postgres-0` or `kafka-0` come back to its data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
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
    """Answers pending claims every second, until the process is stopped."""

    def __init__(self, kubectl: Kubectl, root: Path, node: str) -> None:
        self.kubectl = kubectl
        self.root = root
        self.node = node
        self.made: list[str] = []

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
        while True:
            self.provision_once()
            time.sleep(1.0)


def main() -> None:
    """Run as one of the node's processes, so a node kept up (--keep) still provisions."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args()

    def kubectl(*argv: str, stdin: str | None = None) -> CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={args.kubeconfig}", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    provisioner = Provisioner(kubectl, args.root, args.node)
    args.root.mkdir(parents=True, exist_ok=True)
    provisioner.loop()


if __name__ == "__main__":
    main()

"""The real-cluster check: the system on a real kubelet and containerd, with no registry."""

"""The deployment: the image (image/), the Kubernetes manifests (k8s/) and the config
center's defaults (config/) as data, and the Python that builds, applies and checks them
(tooling/).
"""

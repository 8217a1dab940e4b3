"""The images and the cluster path: ``image`` builds the images (`make image`), ``k8s``
deploys to kind or minikube (`make up`, `make load-k8s`, `make down-k8s`), ``k8s_check``,
``cluster_check`` and ``real_check`` check the manifests statically, on a real API server
with fake nodes, and in real pods on a real node here.
"""

"""A real one-node Kubernetes cluster for the kubernetes backend: :mod:`harness.kube.cluster`."""

"""Components: etcd, Go services, Prometheus, Toxiproxy, load generators."""

"""Components: etcd, any service (Service; orderd is one), Prometheus, Toxiproxy, load."""

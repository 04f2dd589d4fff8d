"""Backends: where workloads run (``local``, ``docker``, ``kubernetes``)."""

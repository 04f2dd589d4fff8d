"""Generated gRPC stubs (python -m harness.gobuild --proto)."""

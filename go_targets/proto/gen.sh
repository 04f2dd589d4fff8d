#!/usr/bin/env bash
# Regenerates the Go protobuf/gRPC code in proto/ordersv1 from proto/orders.proto.
# Needs protoc (apt-get install -y protobuf-compiler) and Go; the plugins are pinned here.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.34.2
GOBIN="$bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.4.0
PATH="$bin:$PATH" protoc -I proto \
  --go_out=proto/ordersv1 --go_opt=paths=source_relative \
  --go-grpc_out=proto/ordersv1 --go-grpc_opt=paths=source_relative \
  proto/orders.proto

// Package store is orderd's key-value state: etcd (v3 API over mutual TLS)
// or an in-memory map when no etcd endpoints are configured.
package store

import (
	"context"
	"errors"
)

// KV is one key with its value and modification revision.
type KV struct {
	Key   string
	Value []byte
	Rev   int64
}

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("store: key not found")

// Store is the minimal interface orderd needs.
type Store interface {
	// Get returns the value and its modification revision.
	Get(ctx context.Context, key string) (KV, error)
	// Put writes unconditionally.
	Put(ctx context.Context, key string, val []byte) error
	// CompareAndSwap writes val only if key's modification revision is still
	// rev (rev 0 = key must not exist). It reports whether the write happened.
	CompareAndSwap(ctx context.Context, key string, rev int64, val []byte) (bool, error)
	// List returns up to limit keys under prefix, in key order.
	List(ctx context.Context, prefix string, limit int) ([]KV, error)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	Close() error
}

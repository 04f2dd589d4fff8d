package store

import (
	"context"
	"sort"
	"strings"
	"sync"
)

// Memory is an in-process Store; every operation holds one mutex, so its
// CompareAndSwap is atomic.
type Memory struct {
	mu   sync.Mutex
	rev  int64
	data map[string]KV
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{data: make(map[string]KV)} }

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) (KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv, ok := m.data[key]
	if !ok {
		return KV{}, ErrNotFound
	}
	return kv, nil
}

// Put implements Store.
func (m *Memory) Put(_ context.Context, key string, val []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putLocked(key, val)
	return nil
}

func (m *Memory) putLocked(key string, val []byte) {
	m.rev++
	m.data[key] = KV{Key: key, Value: append([]byte(nil), val...), Rev: m.rev}
}

// CompareAndSwap implements Store.
func (m *Memory) CompareAndSwap(_ context.Context, key string, rev int64, val []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.data[key]
	if (rev == 0 && ok) || (rev != 0 && (!ok || cur.Rev != rev)) {
		return false, nil
	}
	m.putLocked(key, val)
	return true, nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, prefix string, limit int) ([]KV, error) {
	m.mu.Lock()
	keys := make([]string, 0, 64)
	for k := range m.data {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]KV, 0, len(keys))
	for _, k := range keys {
		out = append(out, m.data[k])
	}
	m.mu.Unlock()
	return out, nil
}

// Ping implements Store.
func (m *Memory) Ping(context.Context) error { return nil }

// Close implements Store.
func (m *Memory) Close() error { return nil }

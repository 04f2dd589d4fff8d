package store

import (
	"context"
	"errors"
	"testing"
)

func TestMemoryCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	if _, err := m.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if ok, _ := m.CompareAndSwap(ctx, "k", 0, []byte("1")); !ok {
		t.Fatal("create failed")
	}
	if ok, _ := m.CompareAndSwap(ctx, "k", 0, []byte("2")); ok {
		t.Fatal("create over existing key succeeded")
	}
	kv, _ := m.Get(ctx, "k")
	if ok, _ := m.CompareAndSwap(ctx, "k", kv.Rev+1, []byte("3")); ok {
		t.Fatal("stale revision accepted")
	}
	if ok, _ := m.CompareAndSwap(ctx, "k", kv.Rev, []byte("3")); !ok {
		t.Fatal("current revision refused")
	}
	_ = m.Put(ctx, "p/b", []byte("b"))
	_ = m.Put(ctx, "p/a", []byte("a"))
	l, _ := m.List(ctx, "p/", 1)
	if len(l) != 1 || l[0].Key != "p/a" {
		t.Fatalf("list: %+v", l)
	}
}

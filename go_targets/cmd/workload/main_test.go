package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCounterRewritesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "count")
	if err := counter(path, time.Millisecond, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 1 {
		t.Fatalf("counter file holds %q, want a number >= 1", data)
	}
}

func TestHealthFollowsTheFileAndGetSeesTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	flag := filepath.Join(t.TempDir(), "sick")
	go func() { _ = serve("127.0.0.1:"+port, flag, 5*time.Second) }()
	addr := "127.0.0.1:" + port
	deadline := time.Now().Add(5 * time.Second)
	for !get(addr) {
		if time.Now().After(deadline) {
			t.Fatal("server never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	status := func() int {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("healthz = %d without the file, want 200", got)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusServiceUnavailable {
		t.Fatalf("healthz = %d with the file, want 503", got)
	}
}

func TestGetFailsWithoutAServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if get(addr) {
		t.Fatalf("get(%s) = true with nothing listening", addr)
	}
}

func TestCrashRejectsBadArguments(t *testing.T) {
	for _, args := range [][]string{{}, {"soon"}, {"1s", "three"}, {"1s", "3", "x"}} {
		if err := crash(args); err == nil {
			t.Errorf("crash(%q) accepted", args)
		}
	}
}

func TestAllocRejectsBadSizes(t *testing.T) {
	for _, mb := range []string{"0", "-1", "lots"} {
		if err := alloc(mb, 0); err == nil {
			t.Errorf("alloc(%q) accepted", mb)
		}
	}
}

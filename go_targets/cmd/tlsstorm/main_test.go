package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("TLSSTORM_AS_MAIN") == "1" {
		os.Exit(run())
	}
	os.Exit(m.Run())
}

func self(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TLSSTORM_AS_MAIN=1")
	return cmd
}

func TestRefusesNonLoopbackTarget(t *testing.T) {
	out, err := self("--target", "192.0.2.1:443", "--duration", "1s").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "not a loopback") {
		t.Fatalf("want exit 2 naming loopback, got %v: %s", err, out)
	}
	out, err = self("--target", "127.0.0.1:1").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--duration") {
		t.Fatalf("missing --duration must exit 2: %v: %s", err, out)
	}
}

func TestSIGTERMPrintsSummary(t *testing.T) {
	cmd := self("--target", "127.0.0.1:1", "--duration", "1m", "--rate", "100")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("did not stop on SIGTERM")
	}
	var s struct {
		Event     string `json:"event"`
		StoppedBy string `json:"stopped_by"`
		Errors    map[string]int64
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &s); err != nil || s.Event != "summary" || s.StoppedBy != "signal" {
		t.Fatalf("summary %q: %v", out.String(), err)
	}
}

package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("TLSSINK_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// On SIGTERM the sink stops and reports the handshakes it completed.
func TestSIGTERMReportsCompletedHandshakes(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--addr", "127.0.0.1:0", "--duration", "1m")
	cmd.Env = append(os.Environ(), "TLSSINK_AS_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	var listening struct{ Addr string }
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &listening) != nil {
		t.Fatalf("no listening line: %q", lines.Text())
	}
	for i := 0; i < 3; i++ {
		c, err := tls.Dial("tcp", listening.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test sink
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// No wait: the sink's side of the last handshake may still be running,
	// and it must be counted.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var stopped struct {
		Event      string
		Handshakes int64
	}
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &stopped) != nil || stopped.Event != "stopped" {
		t.Fatalf("no stopped line: %q", lines.Text())
	}
	if stopped.Handshakes != 3 {
		t.Fatalf("sink completed %d handshakes, want 3", stopped.Handshakes)
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests run orderd as a subprocess: several bugs crash the process or
// must be observed under the race detector.

var (
	binDir    string
	buildMu   sync.Mutex
	built     = map[string]string{}
	buildErrs = map[string]error{}
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "orderd-test-")
	if err != nil {
		panic(err)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func goBin() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// buildBinary builds ./cmd/<name> (optionally with -race) once per test run.
func buildBinary(t *testing.T, name string, race bool) string {
	t.Helper()
	key := name + strconv.FormatBool(race)
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[key]; ok {
		return p
	}
	if err, ok := buildErrs[key]; ok {
		t.Fatal(err)
	}
	out := filepath.Join(binDir, key)
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "../"+name)
	cmd := exec.Command(goBin(), args...)
	// Like harness/gobuild.py: static for normal builds (needed for the
	// runtime to detect global_deadlock), cgo for -race.
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+map[bool]string{true: "1", false: "0"}[race])
	if b, err := cmd.CombinedOutput(); err != nil {
		buildErrs[key] = fmt.Errorf("go %v: %v\n%s", args, err, b)
		t.Fatal(buildErrs[key])
	}
	built[key] = out
	return out
}

type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	HTTP   string
	GRPC   string
	Admin  string
	stderr *syncBuf
	done   chan struct{}
	err    error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type startOpts struct {
	race bool
	env  []string
	args []string
}

// startOrderd starts orderd on ephemeral loopback ports and waits for its
// listening line. The process is killed when the test ends.
func startOrderd(t *testing.T, o startOpts) *proc {
	t.Helper()
	bin := buildBinary(t, "orderd", o.race)
	args := append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "warn"}, o.args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), o.env...)
	p := &proc{t: t, cmd: cmd, stderr: &syncBuf{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("orderd stderr (last 4k):\n%s", tail(p.stderr.String(), 4096))
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-lines:
		var ev struct{ Event, HTTP, GRPC, Admin string }
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Event != "listening" {
			t.Fatalf("bad listening line %q: %v", l, err)
		}
		p.HTTP, p.GRPC, p.Admin = "http://"+ev.HTTP, ev.GRPC, "http://"+ev.Admin
	case <-p.done:
		t.Fatalf("orderd exited before listening: %v\n%s", p.err, p.stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("orderd did not print its listening line\n%s", p.stderr.String())
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

var defaultClient = client(10 * time.Second)

// do sends a request and returns status and body; status 0 on transport error.
func do(c *http.Client, method, url string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (p *proc) setBug(name string, enabled bool, intensity float64) {
	p.t.Helper()
	code, b := do(defaultClient, "PUT", p.Admin+"/bugs/"+name, map[string]any{"enabled": enabled, "intensity": intensity})
	if code != 200 {
		p.t.Fatalf("PUT /bugs/%s: %d %s", name, code, b)
	}
}

// metric returns the sum of all samples of a metric family whose label text
// contains labelSub (empty = any).
func (p *proc) metric(name, labelSub string) float64 {
	p.t.Helper()
	code, b := do(defaultClient, "GET", p.HTTP+"/metrics", nil)
	if code != 200 {
		p.t.Fatalf("GET /metrics: %d %s", code, b)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
	sum, found := 0.0, false
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if labelSub != "" && !strings.Contains(m[1], labelSub) {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
		found = true
	}
	if !found {
		p.t.Fatalf("metric %s%s not found", name, labelSub)
	}
	return sum
}

func (p *proc) goroutineDump() string {
	_, b := do(defaultClient, "GET", p.HTTP+"/debug/pprof/goroutine?debug=2", nil)
	return string(b)
}

func (p *proc) rssBytes() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		p.t.Fatal("no VmRSS")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// waitExit waits for the process to exit by itself.
func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// parallelRequests runs n requests with at most conc in flight, bounded by
// the client timeout; it returns the status codes.
func parallelRequests(n, conc int, fn func(i int) int) []int {
	codes := make([]int, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			codes[i] = fn(i)
		}(i)
	}
	wg.Wait()
	return codes
}

func count(codes []int, code int) int {
	n := 0
	for _, c := range codes {
		if c == code {
			n++
		}
	}
	return n
}

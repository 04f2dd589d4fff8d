// Command workload is the backend compliance suite's test program: one static
// binary (stdlib only) that behaves the same as a host process, as a
// container's PID 1 and as a pod, so one suite runs unchanged on every
// backend. Every mode stops by itself (at most -for, default 60 s).
//
//	workload sleep [-banner up] [-ignore-term] [-for 60s]  print banner, wait; TERM: "got TERM", exit 0
//	workload counter [-every 50ms] [-for 60s] FILE         rewrite FILE with 0, 1, 2... (atomically)
//	workload alloc [-for 60s] MB                           allocate and touch MB MiB, then print "survived"
//	workload busy [-for 60s]                               burn one core
//	workload http [-bind 127.0.0.1] [-health-file F] PORT  200 on /, /healthz 503 while F exists
//	workload crash AFTER [CODE]                            print the start time, exit CODE (3) after AFTER
//	workload connect [-every 100ms] [-for 60s] HOST:PORT   print "ok"/"fail" per HTTP GET / attempt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxFor bounds every mode, so a forgotten workload ends by itself.
const maxFor = 10 * time.Minute

func main() {
	if len(os.Args) < 2 {
		fail("usage: workload sleep|counter|alloc|busy|http|crash|connect [flags] [args]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	duration := fs.Duration("for", 60*time.Second, "stop after this long (at most 10m)")
	var err error
	switch os.Args[1] {
	case "sleep":
		banner := fs.String("banner", "up", "line printed once running")
		ignore := fs.Bool("ignore-term", false, "ignore SIGTERM")
		parse(fs, 0)
		err = sleep(*banner, *ignore, bounded(*duration))
	case "counter":
		every := fs.Duration("every", 50*time.Millisecond, "period")
		parse(fs, 1)
		err = counter(fs.Arg(0), *every, bounded(*duration))
	case "alloc":
		parse(fs, 1)
		err = alloc(fs.Arg(0), bounded(*duration))
	case "busy":
		parse(fs, 0)
		busy(bounded(*duration))
	case "http":
		bind := fs.String("bind", "127.0.0.1", "address to listen on")
		health := fs.String("health-file", "", "/healthz fails while this file exists")
		parse(fs, 1)
		err = serve(net.JoinHostPort(*bind, fs.Arg(0)), *health, bounded(*duration))
	case "crash":
		parse(fs, -1)
		err = crash(fs.Args())
	case "connect":
		every := fs.Duration("every", 100*time.Millisecond, "period between attempts")
		parse(fs, 1)
		connect(fs.Arg(0), *every, bounded(*duration))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func parse(fs *flag.FlagSet, nargs int) {
	_ = fs.Parse(os.Args[2:]) // ExitOnError
	if nargs >= 0 && fs.NArg() != nargs {
		fail(fmt.Sprintf("%s takes %d argument(s), got %q", fs.Name(), nargs, fs.Args()))
	}
}

func bounded(d time.Duration) time.Duration { return min(d, maxFor) }

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "workload:", msg)
	os.Exit(2)
}

// sleep handles TERM itself: as a container's PID 1 a process gets no default handlers.
func sleep(banner string, ignore bool, d time.Duration) error {
	term := make(chan os.Signal, 1)
	if ignore {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	fmt.Println(banner)
	select {
	case <-term:
		fmt.Println("got TERM")
	case <-time.After(d):
	}
	return nil
}

// counter rewrites FILE through a rename, so a reader never sees a partial write.
func counter(path string, every, d time.Duration) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(i)+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		time.Sleep(every)
	}
	return nil
}

// alloc touches every page, so the memory is charged to the cgroup at once.
func alloc(mb string, d time.Duration) error {
	n, err := strconv.Atoi(mb)
	if err != nil || n <= 0 {
		return fmt.Errorf("alloc: MB must be a positive integer, got %q", mb)
	}
	chunks := make([][]byte, 0, n)
	for range n {
		c := make([]byte, 1<<20)
		for j := 0; j < len(c); j += 4096 {
			c[j] = 1
		}
		chunks = append(chunks, c)
	}
	fmt.Println("survived", len(chunks), "MiB")
	time.Sleep(d)
	return nil
}

func busy(d time.Duration) {
	deadline := time.Now().Add(d)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
}

func serve(addr, healthFile string, d time.Duration) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if healthFile != "" {
			if _, err := os.Stat(healthFile); err == nil {
				http.Error(w, "unhealthy: "+healthFile+" exists", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "healthy")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening on", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	time.AfterFunc(d, func() { _ = srv.Close() })
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// crash prints its start time (seconds, wall clock) so a test can measure restart backoff.
func crash(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("crash takes AFTER [CODE], got %q", args)
	}
	after, err := time.ParseDuration(args[0])
	if err != nil {
		return fmt.Errorf("crash: AFTER: %w", err)
	}
	code := 3
	if len(args) == 2 {
		if code, err = strconv.Atoi(args[1]); err != nil {
			return fmt.Errorf("crash: CODE: %w", err)
		}
	}
	fmt.Printf("%.6f\n", float64(time.Now().UnixNano())/1e9)
	time.Sleep(bounded(after))
	os.Exit(code)
	return nil
}

func connect(target string, every, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if get(target) {
			fmt.Println("ok")
		} else {
			fmt.Println("fail")
		}
		time.Sleep(every)
	}
}

// get is one HTTP/1.0 GET / on a fresh connection: no pooling hides a cut.
func get(target string) bool {
	conn, err := net.DialTimeout("tcp", target, 300*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/")
}

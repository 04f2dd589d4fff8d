package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/faultline/faultline/go_targets/proto/ordersv1"
)

func TestAPIAndAdmin(t *testing.T) {
	t.Parallel()
	p := startOrderd(t, startOpts{args: []string{"--bug", "memory_leak=1024", "--bug", "map_race"}})
	if code, b := do(defaultClient, "GET", p.HTTP+"/ping", nil); code != 200 || string(b) != "pong\n" {
		t.Fatalf("ping: %d %q", code, b)
	}
	code, b := do(defaultClient, "POST", p.HTTP+"/orders", map[string]any{"sku": "widget", "qty": 3})
	if code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	var o struct{ ID, SKU, Status string }
	_ = json.Unmarshal(b, &o)
	if code, b := do(defaultClient, "GET", p.HTTP+"/orders/"+o.ID, nil); code != 200 || !strings.Contains(string(b), o.ID) {
		t.Fatalf("get: %d %s", code, b)
	}
	if code, _ := do(defaultClient, "GET", p.HTTP+"/orders/nope", nil); code != 404 {
		t.Fatalf("get missing: %d", code)
	}
	if code, b := do(defaultClient, "GET", p.HTTP+"/orders", nil); code != 200 || !strings.Contains(string(b), o.ID) {
		t.Fatalf("list: %d %s", code, b)
	}
	if code, b := do(defaultClient, "POST", p.HTTP+"/orders", map[string]any{"sku": "", "qty": 0}); code != 400 {
		t.Fatalf("invalid create: %d %s", code, b)
	}
	if code, b := do(defaultClient, "PUT", p.Admin+"/stock/widget", map[string]any{"qty": 5}); code != 200 {
		t.Fatalf("set stock: %d %s", code, b)
	}
	if code, b := do(defaultClient, "POST", p.HTTP+"/inventory/reserve", map[string]any{"sku": "widget", "qty": 4}); code != 200 || !strings.Contains(string(b), `"remaining":1`) {
		t.Fatalf("reserve: %d %s", code, b)
	}
	if code, b := do(defaultClient, "POST", p.HTTP+"/inventory/reserve", map[string]any{"sku": "widget", "qty": 4}); code != 409 {
		t.Fatalf("reserve beyond stock: %d %s", code, b)
	}
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/"} {
		if code, b := do(defaultClient, "GET", p.HTTP+path, nil); code != 200 {
			t.Fatalf("%s: %d %s", path, code, b)
		}
	}
	// Admin: switches from flags are on, others off, and can be flipped.
	code, b = do(defaultClient, "GET", p.Admin+"/bugs", nil)
	var sw map[string]struct {
		Enabled   bool
		Intensity float64
	}
	if err := json.Unmarshal(b, &sw); err != nil || code != 200 || len(sw) != 7 {
		t.Fatalf("GET /bugs: %d %s", code, b)
	}
	if !sw["memory_leak"].Enabled || sw["memory_leak"].Intensity != 1024 || !sw["map_race"].Enabled || sw["goroutine_leak"].Enabled {
		t.Fatalf("flags not applied: %+v", sw)
	}
	p.setBug("map_race", false, 8)
	if v := p.metric("orderd_bug_enabled", `bug="map_race"`); v != 0 {
		t.Fatalf("orderd_bug_enabled map_race = %v", v)
	}
	if v := p.metric("orderd_bug_enabled", `bug="memory_leak"`); v != 1 {
		t.Fatalf("orderd_bug_enabled memory_leak = %v", v)
	}
	if code, _ := do(defaultClient, "PUT", p.Admin+"/bugs/no_such_bug", map[string]any{"enabled": true}); code != 404 {
		t.Fatalf("unknown bug: %d", code)
	}
	// Metrics required by the harness exist.
	for _, m := range []string{"orderd_http_requests_total", "orderd_http_request_duration_seconds_bucket", "orderd_leaked_goroutines_total",
		"orderd_inventory_oversold_total", "orderd_retained_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		p.metric(m, "")
	}
	if v := p.metric("orderd_http_requests_total", `code="201",route="POST /orders"`); v != 1 {
		t.Fatalf("requests counter = %v", v)
	}

	// gRPC offers the same operations.
	conn, err := grpc.NewClient(p.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewOrderServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cr, err := gc.CreateOrder(ctx, &pb.CreateOrderRequest{Sku: "gadget", Qty: 1})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := gc.GetOrder(ctx, &pb.GetOrderRequest{Id: cr.Order.Id}); err != nil || g.Order.Sku != "gadget" {
		t.Fatalf("grpc get: %v %v", g, err)
	}
	if r, err := gc.Reserve(ctx, &pb.ReserveRequest{Sku: "gadget", Qty: 1}); err != nil || !r.Ok {
		t.Fatalf("grpc reserve: %v %v", r, err)
	}
	if l, err := gc.ListOrders(ctx, &pb.ListOrdersRequest{}); err != nil || len(l.Orders) != 2 {
		t.Fatalf("grpc list: %v %v", l, err)
	}
	if _, err := gc.Ping(ctx, &pb.PingRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t, "orderd", false)
	for _, args := range [][]string{
		{"--http-addr", "0.0.0.0:0", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"},
		{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--etcd-endpoints", "https://10.1.2.3:2379"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "not a loopback") {
			t.Fatalf("%v: want exit 2 naming loopback, got %v\n%s", args, err, out)
		}
	}
}

func createLoad(p *proc, n, conc int) []int {
	c := client(5 * time.Second)
	return parallelRequests(n, conc, func(i int) int {
		code, _ := do(c, "POST", p.HTTP+"/orders", map[string]any{"sku": fmt.Sprintf("s%d", i%7), "qty": 1})
		return code
	})
}

func TestGoroutineLeak(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{})
			p.setBug("goroutine_leak", on, 4)
			createLoad(p, 20, 4) // warm up connections
			before := p.metric("go_goroutines", "")
			codes := createLoad(p, 100, 4)
			if count(codes, 201) != 100 {
				t.Fatalf("creates failed: %v", codes)
			}
			after := p.metric("go_goroutines", "")
			leaked := p.metric("orderd_leaked_goroutines_total", "")
			t.Logf("goroutines %v -> %v, leaked counter %v", before, after, leaked)
			if on {
				if after-before < 380 || leaked != 480 {
					t.Fatalf("leak not visible: goroutines +%v, counter %v", after-before, leaked)
				}
				dump := p.goroutineDump()
				for _, want := range []string{"leakGoroutine.func1", "leakGoroutine.func2", "leakGoroutine.func3"} {
					if !strings.Contains(dump, want) {
						t.Fatalf("goroutine dump lacks %s", want)
					}
				}
			} else if after-before > 20 || leaked != 0 {
				t.Fatalf("goroutines grew with the bug off: +%v, counter %v", after-before, leaked)
			}
		})
	}
}

func TestChannelDeadlock(t *testing.T) {
	t.Parallel()
	p := startOrderd(t, startOpts{args: []string{"--reserve-workers", "2", "--health-timeout", "1s"}})
	short := client(1500 * time.Millisecond)
	reserve := func(i int) int {
		code, _ := do(short, "POST", p.HTTP+"/inventory/reserve", map[string]any{"sku": "cd", "qty": 1})
		return code
	}
	// Off: reservations succeed, healthz stays up.
	if codes := parallelRequests(20, 4, reserve); count(codes, 200) != 20 {
		t.Fatalf("bug off: reserve codes %v", codes)
	}
	if code, _ := do(defaultClient, "GET", p.HTTP+"/healthz", nil); code != 200 {
		t.Fatalf("bug off: healthz %d", code)
	}
	p.setBug("channel_deadlock", true, 1)
	codes := parallelRequests(4, 4, reserve)
	if count(codes, 200) != 0 {
		t.Fatalf("bug on: reserve should hang, got %v", codes)
	}
	// Other routes keep working.
	for _, path := range []string{"/ping", "/orders"} {
		if code, _ := do(short, "GET", p.HTTP+path, nil); code != 200 {
			t.Fatalf("bug on: %s -> %d", path, code)
		}
	}
	// Liveness fails within its timeout (plus a margin).
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, b := do(short, "GET", p.HTTP+"/healthz", nil)
		if code == 503 {
			t.Logf("healthz: %s", b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz still %d after the health timeout", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	dump := p.goroutineDump()
	if !strings.Contains(dump, "[chan send") || !strings.Contains(dump, "(*reservePool).worker") {
		t.Fatalf("goroutine dump does not show the worker blocked on chan send:\n%s", tail(dump, 3000))
	}
	if v := p.metric("orderd_reserve_workers_stuck", ""); v != 2 {
		t.Fatalf("stuck workers gauge %v", v)
	}
	// Turning it off drains the stuck workers: the service heals.
	p.setBug("channel_deadlock", false, 1)
	deadline = time.Now().Add(5 * time.Second)
	for {
		if code, _ := do(short, "GET", p.HTTP+"/healthz", nil); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("healthz did not recover after the bug was switched off")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := reserve(0); code != 200 {
		t.Fatalf("reserve after heal: %d", code)
	}
}

func TestMutexDeadlock(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{args: []string{"--health-timeout", "1s"}})
			p.setBug("mutex_deadlock", on, 5)
			c := client(2 * time.Second)
			codes := parallelRequests(60, 12, func(i int) int {
				if i%2 == 0 {
					code, _ := do(c, "POST", p.HTTP+"/orders", map[string]any{"sku": "md", "qty": 1})
					return code
				}
				code, _ := do(c, "POST", p.HTTP+"/inventory/reserve", map[string]any{"sku": "md", "qty": 1})
				return code
			})
			ok := count(codes, 201) + count(codes, 200)
			t.Logf("ok %d of %d", ok, len(codes))
			if !on {
				if ok != len(codes) {
					t.Fatalf("bug off: failures %v", codes)
				}
				return
			}
			if ok == len(codes) {
				t.Fatalf("bug on: no request hung")
			}
			dump := p.goroutineDump()
			if !strings.Contains(dump, "sync.(*Mutex).Lock") || !strings.Contains(dump, "(*Service).CreateOrder") || !strings.Contains(dump, "(*Service).doReserve") {
				t.Fatalf("dump does not show both routes blocked in Mutex.Lock:\n%s", tail(dump, 3000))
			}
			if code, _ := do(c, "GET", p.HTTP+"/ping", nil); code != 200 {
				t.Fatalf("ping failed during mutex deadlock: %d", code)
			}
		})
	}
}

func TestGlobalDeadlock(t *testing.T) {
	t.Parallel()
	p := startOrderd(t, startOpts{})
	if code, _ := do(defaultClient, "GET", p.HTTP+"/ping", nil); code != 200 {
		t.Fatal("ping")
	}
	code, _ := do(defaultClient, "PUT", p.Admin+"/bugs/global_deadlock", map[string]any{"enabled": true})
	if code != 200 {
		t.Fatalf("switch: %d", code)
	}
	if !p.waitExit(15 * time.Second) {
		t.Fatal("orderd did not die with global_deadlock on")
	}
	ee, ok := p.err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(p.stderr.String(), "fatal error: all goroutines are asleep - deadlock!") {
		t.Fatalf("want exit 2 with the runtime's deadlock message, got %v\n%s", p.err, tail(p.stderr.String(), 2000))
	}
	// deadlockd, the standalone program, in both modes.
	bin := buildBinary(t, "deadlockd", false)
	for _, mode := range []string{"mutex", "chan"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bin, "--mode", mode).CombinedOutput()
		cancel()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "all goroutines are asleep - deadlock!") {
			t.Fatalf("deadlockd --mode %s: %v\n%s", mode, err, out)
		}
	}
}

// raceLoad hammers create/get/list concurrently for at most d or until the
// process dies.
func raceLoad(p *proc, d time.Duration) {
	c := client(2 * time.Second)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 5000 && time.Now().Before(stop); i++ {
				select {
				case <-p.done:
					return
				default:
				}
				switch i % 3 {
				case 0, 1:
					_, b := do(c, "POST", p.HTTP+"/orders", map[string]any{"sku": "race", "qty": 1})
					var o struct{ ID string }
					if json.Unmarshal(b, &o) == nil && o.ID != "" {
						do(c, "GET", p.HTTP+"/orders/"+o.ID, nil)
					}
				default:
					do(c, "GET", p.HTTP+"/orders?limit=5", nil)
				}
			}
		}(w)
	}
	wg.Wait()
}

func TestMapRaceDetector(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a -race build")
	}
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{race: true, env: []string{"GORACE=halt_on_error=0"}})
			p.setBug("map_race", on, 8)
			deadline := time.Now().Add(8 * time.Second)
			for time.Now().Before(deadline) && !strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
				raceLoad(p, time.Second)
			}
			raced := strings.Contains(p.stderr.String(), "WARNING: DATA RACE")
			if on != raced {
				t.Fatalf("bug on=%v but DATA RACE reported=%v", on, raced)
			}
			if on && !strings.Contains(p.stderr.String(), "cacheFill") {
				t.Fatalf("race report does not point at the cache:\n%s", tail(p.stderr.String(), 3000))
			}
		})
	}
}

func TestMapRaceCrashesNormalBuild(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{})
			p.setBug("map_race", on, 64)
			deadline := time.Now().Add(6 * time.Second)
			for time.Now().Before(deadline) {
				raceLoad(p, time.Second)
				if p.waitExit(10 * time.Millisecond) {
					break
				}
			}
			died := p.waitExit(time.Second)
			errs := p.stderr.String()
			if !on {
				if died {
					t.Fatalf("died with the bug off:\n%s", tail(errs, 2000))
				}
				return
			}
			if !died || !strings.Contains(errs, "fatal error: concurrent map") {
				t.Fatalf("want a 'fatal error: concurrent map ...' crash, died=%v\n%s", died, tail(errs, 2000))
			}
			t.Logf("crash: %s", firstLine(errs, "fatal error"))
		})
	}
}

func firstLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestMemoryLeak(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{})
			p.setBug("memory_leak", on, 1<<20)
			createLoad(p, 10, 2)
			before := p.rssBytes()
			createLoad(p, 300, 4)
			after := p.rssBytes()
			retained := p.metric("orderd_retained_bytes", "")
			t.Logf("RSS %d MiB -> %d MiB, retained %v MiB", before>>20, after>>20, retained/(1<<20))
			if on {
				if after-before < 250<<20 || retained < 300<<20 {
					t.Fatalf("no leak visible")
				}
			} else if after-before > 40<<20 || retained != 0 {
				t.Fatalf("memory grew with the bug off")
			}
		})
	}
}

func TestCheckThenActOversells(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", on), func(t *testing.T) {
			p := startOrderd(t, startOpts{args: []string{"--reserve-workers", "16"}})
			p.setBug("check_then_act", on, 2)
			checkOversell(t, p, "cta", on)
		})
	}
}

// checkOversell sets a stock of 40, fires 160 concurrent reservations of 1
// and checks the grants and the oversold counter.
func checkOversell(t *testing.T, p *proc, sku string, on bool) {
	t.Helper()
	if code, b := do(defaultClient, "PUT", p.Admin+"/stock/"+sku, map[string]any{"qty": 40}); code != 200 {
		t.Fatalf("set stock: %d %s", code, b)
	}
	before := p.metric("orderd_inventory_oversold_total", "")
	c := client(10 * time.Second)
	codes := parallelRequests(160, 16, func(i int) int {
		code, _ := do(c, "POST", p.HTTP+"/inventory/reserve", map[string]any{"sku": sku, "qty": 1})
		return code
	})
	granted := count(codes, 200)
	oversold := p.metric("orderd_inventory_oversold_total", "") - before
	t.Logf("granted %d of stock 40, oversold counter +%v, codes 409=%d", granted, oversold, count(codes, 409))
	if on {
		if granted <= 40 || oversold < 1 {
			t.Fatalf("no oversell with check_then_act on")
		}
	} else if granted != 40 || oversold != 0 || count(codes, 409) != 120 {
		t.Fatalf("bug off must grant exactly the stock: %v", codes)
	}
}

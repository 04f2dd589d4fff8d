// Package deadlock blocks every goroutine of a process that has no network
// listeners left, so the Go runtime reports
// "fatal error: all goroutines are asleep - deadlock!" and exits with status 2.
// That detection only works in binaries built with CGO_ENABLED=0 (see
// Detectable); a cgo build just hangs forever.
package deadlock

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Run never returns. mode is "mutex" (two goroutines in a lock-order
// inversion, main waits for them) or "chan" (a cycle of unbuffered sends).
// The process must have no timers, listeners or other runnable goroutines,
// otherwise the runtime cannot tell it is dead.
func Run(mode string) {
	fmt.Fprintf(os.Stderr, "{\"level\":\"ERROR\",\"msg\":\"entering global deadlock\",\"mode\":%q,\"runtime_detects\":%v}\n", mode, Detectable)
	var wg sync.WaitGroup
	switch mode {
	case "chan":
		a, b := make(chan int), make(chan int)
		wg.Add(2)
		go func() { defer wg.Done(); a <- <-b }()
		go func() { defer wg.Done(); b <- <-a }()
	default:
		var muA, muB sync.Mutex
		var ready sync.WaitGroup
		ready.Add(2)
		wg.Add(2)
		go func() {
			defer wg.Done()
			muA.Lock()
			ready.Done()
			ready.Wait()
			muB.Lock()
		}()
		go func() {
			defer wg.Done()
			muB.Lock()
			ready.Done()
			ready.Wait()
			muA.Lock()
		}()
	}
	wg.Wait()
	// Unreachable; keep the compiler and readers honest.
	time.Sleep(0)
	panic("deadlock: goroutines finished unexpectedly")
}

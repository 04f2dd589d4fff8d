// Command deadlockd deadlocks every goroutine on purpose so that the Go
// runtime dies with "fatal error: all goroutines are asleep - deadlock!"
// (exit status 2). It opens no listener: with live network listeners the
// runtime cannot detect a global deadlock.
//
//	deadlockd [--mode mutex|chan] [--delay 500ms]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/faultline/faultline/go_targets/internal/deadlock"
)

func main() {
	mode := flag.String("mode", "mutex", "mutex (lock-order inversion) or chan (unbuffered send cycle)")
	delay := flag.Duration("delay", 0, "run normally this long before deadlocking (max 10m)")
	flag.Parse()
	if *mode != "mutex" && *mode != "chan" {
		fmt.Fprintln(os.Stderr, "deadlockd: --mode must be mutex or chan")
		os.Exit(2)
	}
	if *delay > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "deadlockd: --delay at most 10m")
		os.Exit(2)
	}
	fmt.Printf("{\"event\":\"started\",\"pid\":%d,\"mode\":%q}\n", os.Getpid(), *mode)
	time.Sleep(*delay)
	deadlock.Run(*mode)
}

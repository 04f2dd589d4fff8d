// Control: late-signalled Cond: a consumer waits about two seconds each time before the producer signals.
// Expect: none
package main

import (
	"sync"
	"time"
)

func main() {
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	ready := 0
	go func() {
		for {
			mu.Lock()
			for ready == 0 {
				cond.Wait()
			}
			ready--
			mu.Unlock()
		}
	}()
	for {
		time.Sleep(2 * time.Second)
		mu.Lock()
		ready++
		cond.Signal()
		mu.Unlock()
	}
}

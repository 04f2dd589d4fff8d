// Control: a contended mutex: eight goroutines take turns on short critical sections; all make progress.
// Expect: none
package main

import (
	"sync"
	"time"
)

func main() {
	var mu sync.Mutex
	total := 0
	for w := 0; w < 8; w++ {
		go func() {
			for {
				mu.Lock()
				total++
				time.Sleep(time.Millisecond)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Hour)
}

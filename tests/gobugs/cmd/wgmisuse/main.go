// Bug: WaitGroup misuse: Add counts every job, but a job that fails validation returns before Done, so the batch's Wait never returns.
// Expect: partial_deadlock
package main

import (
	"sync"
	"time"
)

func runBatch(jobs []int) {
	var wg sync.WaitGroup
	wg.Add(len(jobs))
	for _, j := range jobs {
		go func() {
			if j < 0 {
				return // forgot wg.Done() on the error path
			}
			defer wg.Done()
			time.Sleep(time.Millisecond)
		}()
	}
	wg.Wait() // want
}

func main() {
	go runBatch([]int{1, 2, -3, 4})
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

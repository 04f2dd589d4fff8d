// Control: batches that wait on a WaitGroup for about a second each while their jobs run.
// Expect: none
package main

import (
	"sync"
	"time"
)

func main() {
	for {
		var wg sync.WaitGroup
		for j := 0; j < 4; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Second)
			}()
		}
		wg.Wait()
	}
}

// Bug: WaitGroup misuse: Done is called twice for one job (once in the handler, once deferred), and the counter goes negative.
// Expect: crash
package main

import (
	"sync"
	"time"
)

func job(wg *sync.WaitGroup, id int) {
	defer wg.Done()
	if id%2 == 0 {
		wg.Done() // "done early" for even ids
	}
} // want (the deferred Done runs, and panics, at the function's end)

func main() {
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go job(&wg, i)
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	time.Sleep(time.Hour)
}

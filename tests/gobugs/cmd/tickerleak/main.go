// Bug: ticker leak: each session starts a heartbeat goroutine ranging over a ticker that is never stopped, with no way to end it.
// Expect: goroutine_leak
package main

import "time"

func startSession(id int) {
	t := time.NewTicker(time.Hour)
	go func() {
		for range t.C { // want
			_ = id
		}
	}()
}

func main() {
	for i := 0; ; i++ {
		startSession(i) // the session ends; its heartbeat goroutine does not
		time.Sleep(20 * time.Millisecond)
	}
}

// Bug: unbuffered send nobody reads, per request: the caller gives up after a timeout and the worker goroutine blocks on its result send for ever.
// Expect: goroutine_leak
package main

import "time"

func lookup(id int) int {
	time.Sleep(5 * time.Millisecond)
	return id * 2
}

func handle(id int) (int, bool) {
	result := make(chan int)
	go func() {
		result <- lookup(id) // want
	}()
	select {
	case v := <-result:
		return v, true
	case <-time.After(time.Millisecond):
		return 0, false // timed out: nobody will read result
	}
}

func main() {
	for i := 0; ; i++ {
		handle(i)
		time.Sleep(20 * time.Millisecond)
	}
}

// Bug: select with no exit: each subscription's goroutine loops on its updates channel and has no case to return on.
// Expect: goroutine_leak
package main

import "time"

type subscription struct {
	updates chan string
	resync  chan struct{}
	last    string
}

func subscribe() *subscription {
	s := &subscription{updates: make(chan string), resync: make(chan struct{})}
	go func() {
		for {
			select { // want
			case u := <-s.updates:
				s.last = u
			case <-s.resync:
				s.last = ""
			}
		}
	}()
	return s
}

func main() {
	for i := 0; ; i++ {
		s := subscribe()
		_ = s // the subscriber goes away; its goroutine does not
		time.Sleep(20 * time.Millisecond)
	}
}

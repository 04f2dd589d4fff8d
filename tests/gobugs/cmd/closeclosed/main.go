// Bug: close of a closed channel: two shutdown paths both close the done channel.
// Expect: crash
package main

import "time"

type server struct{ done chan struct{} }

func (s *server) stop() {
	close(s.done) // want
}

func main() {
	s := &server{done: make(chan struct{})}
	go s.stop() // the signal handler's stop
	time.Sleep(50 * time.Millisecond)
	s.stop() // the main loop's stop on its way out
	time.Sleep(time.Hour)
}

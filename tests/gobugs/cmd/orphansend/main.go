// Bug: unbuffered send nobody reads: the collector returns on the first error, and the producer blocks on its next send for good.
// Expect: partial_deadlock
package main

import (
	"errors"
	"time"
)

func produce(out chan<- int) {
	for i := 0; i < 10; i++ {
		out <- i // want
	}
	close(out)
}

func collect(in <-chan int) error {
	for v := range in {
		if v == 2 {
			return errors.New("bad record") // returns without draining in
		}
	}
	return nil
}

func main() {
	ch := make(chan int)
	go produce(ch)
	go collect(ch)
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

// Bug: global deadlock: main waits for a result that the only worker never sends (it returned on an error), and nothing else runs.
// Expect: global_deadlock
package main

import "errors"

func fetch(out chan<- string) {
	if err := errors.New("unreachable"); err != nil {
		return // no send on the error path
	}
	out <- "data"
}

func main() {
	out := make(chan string)
	go fetch(out)
	println(<-out) // want
}

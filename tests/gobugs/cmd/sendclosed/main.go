// Bug: send on closed channel: shutdown closes the results channel while a worker still has a result to send.
// Expect: crash
package main

import "time"

func worker(results chan<- int, id int) {
	time.Sleep(50 * time.Millisecond)
	results <- id // want
}

func main() {
	results := make(chan int)
	go worker(results, 1)
	close(results) // "shutdown": the worker is not done
	time.Sleep(time.Hour)
}

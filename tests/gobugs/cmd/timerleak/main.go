// Bug: timer leak: each request waits in a goroutine for a reply or a one-hour time.After; the reply channel is never written.
// Expect: goroutine_leak
package main

import "time"

func await(reply <-chan string) {
	select { // want
	case <-reply:
	case <-time.After(time.Hour):
	}
}

func main() {
	for i := 0; ; i++ {
		reply := make(chan string)
		go await(reply) // nobody ever sends on reply
		time.Sleep(20 * time.Millisecond)
	}
}

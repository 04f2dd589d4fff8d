// Bug: nil channel: the notifier's channel field was never made, so the sender blocks on a nil channel for good.
// Expect: partial_deadlock
package main

import "time"

type notifier struct {
	events chan string // never made
}

func (n *notifier) notify(e string) {
	n.events <- e // want
}

func main() {
	n := &notifier{}
	go n.notify("started")
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

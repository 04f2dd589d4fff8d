// Bug: lock-order inversion: transfer(a, b) and transfer(b, a) each hold one account's lock and wait for the other's.
// Expect: partial_deadlock
package main

import (
	"sync"
	"time"
)

type account struct {
	mu      sync.Mutex
	balance int
}

func transfer(from, to *account, amount int) {
	from.mu.Lock()
	defer from.mu.Unlock()
	time.Sleep(10 * time.Millisecond) // validation, an audit write...
	to.mu.Lock()                      // want
	defer to.mu.Unlock()
	from.balance -= amount
	to.balance += amount
}

func main() {
	a, b := &account{balance: 100}, &account{balance: 100}
	go transfer(a, b, 10)
	go transfer(b, a, 20)
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

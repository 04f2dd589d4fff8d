// Bug: Cond never signalled: the producer sets ready under the lock but forgets Signal, so the consumer's Wait never returns.
// Expect: partial_deadlock
package main

import (
	"sync"
	"time"
)

type queue struct {
	mu    sync.Mutex
	cond  *sync.Cond
	items []int
}

func (q *queue) put(v int) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock() // q.cond.Signal() missing
}

func (q *queue) take() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 {
		q.cond.Wait() // want
	}
	v := q.items[0]
	q.items = q.items[1:]
	return v
}

func main() {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	go func() {
		for {
			q.take()
		}
	}()
	time.Sleep(100 * time.Millisecond) // the consumer waits first
	q.put(1)
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

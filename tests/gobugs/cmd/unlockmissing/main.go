// Bug: lock not released on an error path: one failing update returns without Unlock, and every worker then blocks on Lock.
// Expect: partial_deadlock
package main

import (
	"errors"
	"sync"
	"time"
)

type store struct {
	mu   sync.Mutex
	rows map[int]int
}

func (s *store) update(k, v int) error {
	s.mu.Lock() // want
	if v < 0 {
		return errors.New("negative value") // s.mu is still locked
	}
	s.rows[k] = v
	s.mu.Unlock()
	return nil
}

func main() {
	s := &store{rows: map[int]int{}}
	for w := 0; w < 4; w++ {
		go func() {
			for i := 0; ; i++ {
				v := i
				if w == 0 && i == 5 {
					v = -1
				}
				_ = s.update(i, v)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

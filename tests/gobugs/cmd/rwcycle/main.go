// Bug: RWMutex reader/writer cycle: a reader takes RLock again while a writer waits, so the writer waits for the reader and the second RLock waits for the writer.
// Expect: partial_deadlock
package main

import (
	"sync"
	"time"
)

type config struct {
	mu     sync.RWMutex
	values map[string]string
}

func (c *config) get(k string) string {
	c.mu.RLock() // want
	defer c.mu.RUnlock()
	return c.values[k]
}

func (c *config) render() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	time.Sleep(50 * time.Millisecond) // formatting takes a while
	return c.get("name") + "=" + c.get("value")
}

func (c *config) set(k, v string) {
	c.mu.Lock() // want
	defer c.mu.Unlock()
	c.values[k] = v
}

func main() {
	c := &config{values: map[string]string{"name": "a", "value": "b"}}
	go c.render()
	time.Sleep(10 * time.Millisecond)
	go c.set("value", "c")
	for {
		time.Sleep(50 * time.Millisecond)
	}
}

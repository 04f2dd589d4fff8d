// Bug: assignment to a nil map: a cache struct made without its map panics on the first store.
// Expect: crash
package main

import "time"

type cache struct{ entries map[string]int }

func (c *cache) store(k string, v int) {
	c.entries[k] = v // want
}

func main() {
	c := &cache{}
	time.Sleep(50 * time.Millisecond)
	c.store("a", 1)
	time.Sleep(time.Hour)
}

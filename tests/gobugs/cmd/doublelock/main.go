// Bug: double lock: Inventory.Reserve calls Count, which locks the mutex Reserve already holds.
// Expect: partial_deadlock
package main

import (
	"fmt"
	"time"

	"example.com/gobugs/internal/shop"
)

func main() {
	inv := shop.NewInventory()
	go func() {
		fmt.Println("reserved:", inv.Reserve("apple", 1))
	}()
	for i := 0; ; i++ { // the rest of the service keeps running
		time.Sleep(50 * time.Millisecond)
	}
}

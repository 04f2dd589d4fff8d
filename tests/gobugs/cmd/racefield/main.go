// Bug: data race on a struct field: order handlers bump Ledger.Orders without a lock (in internal/shop).
// Expect: data_race race
package main

import (
	"time"

	"example.com/gobugs/internal/shop"
)

func main() {
	l := &shop.Ledger{}
	for w := 0; w < 2; w++ {
		go func() {
			for {
				l.Record()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Hour)
}

// Control: main parks in select {} for ever, the classic daemon keep-alive, while a ticker worker runs.
// Expect: none
package main

import "time"

func main() {
	go func() {
		for range time.Tick(500 * time.Millisecond) {
		}
	}()
	select {}
}

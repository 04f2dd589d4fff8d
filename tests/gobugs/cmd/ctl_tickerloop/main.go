// Control: a metrics loop in a select on a ticker and a quit channel, stopped properly at exit.
// Expect: none
package main

import "time"

func loop(quit <-chan struct{}) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-quit:
			return
		}
	}
}

func main() {
	quit := make(chan struct{})
	go loop(quit)
	time.Sleep(time.Hour)
	close(quit)
}

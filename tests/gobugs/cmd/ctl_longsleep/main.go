// Control: long sleeps: background refreshers that sleep for an hour between runs.
// Expect: none
package main

import "time"

func refresher() {
	for {
		time.Sleep(time.Hour)
	}
}

func main() {
	for i := 0; i < 4; i++ {
		go refresher()
	}
	time.Sleep(2 * time.Hour)
}

// Control: a pool that grows lazily to its bound of 12 workers in its first second, then stays there.
// Expect: none
package main

import "time"

func main() {
	jobs := make(chan int)
	workers := 0
	for i := 0; ; i++ {
		if workers < 12 {
			workers++
			go func() {
				for range jobs {
				}
			}()
		}
		select {
		case jobs <- i:
		default:
		}
		time.Sleep(80 * time.Millisecond)
	}
}

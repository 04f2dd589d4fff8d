// Bug: concurrent map writes without a lock (normal build): the Go runtime kills the process with "fatal error: concurrent map writes".
// Expect: crash
package main

import "time"

var sessions = map[int]int{}

func touch(id int) {
	sessions[id%64] = id // want
}

func main() {
	for w := 0; w < 4; w++ {
		go func() {
			for i := w; ; i += 4 {
				touch(i)
			}
		}()
	}
	time.Sleep(time.Hour)
}

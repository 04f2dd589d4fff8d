// Bug: data race on a slice: concurrent appends to a shared slice of log lines.
// Expect: data_race race
package main

import "time"

var lines []string

func logLine(s string) {
	lines = append(lines, s) // want
}

func main() {
	for w := 0; w < 2; w++ {
		go func() {
			for {
				logLine("x")
				time.Sleep(time.Millisecond)
				if len(lines) > 1000 {
					lines = nil // want
				}
			}
		}()
	}
	time.Sleep(time.Hour)
}

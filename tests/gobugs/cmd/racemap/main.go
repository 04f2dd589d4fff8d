// Bug: data race on a map: two goroutines update a shared counter map without a lock.
// Expect: data_race race
package main

import "time"

var hits = map[string]int{}

func count(path string) {
	hits[path]++ // want
}

func main() {
	for w := 0; w < 2; w++ {
		go func() {
			for {
				count("/")
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Hour)
}

// Bug: data race on a counter that is only sometimes contended: a rare background flush races the request path.
// Expect: data_race race nondeterministic
package main

import (
	"math/rand"
	"time"
)

var pending int

func main() {
	go func() {
		for {
			time.Sleep(time.Duration(rand.Intn(2000)) * time.Millisecond)
			pending = 0 // want
		}
	}()
	for {
		pending++ // want
		time.Sleep(time.Duration(500+rand.Intn(3000)) * time.Millisecond)
	}
}

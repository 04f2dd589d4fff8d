// Bug: data race through a closure: fan-out goroutines write the err variable the enclosing function also reads.
// Expect: data_race race
package main

import (
	"errors"
	"time"
)

func fetchAll(n int) error {
	var err error
	for i := 0; i < n; i++ {
		go func() {
			if i%2 == 0 {
				err = errors.New("failed") // want
			}
		}()
	}
	time.Sleep(time.Millisecond)
	return err // want
}

func main() {
	for {
		_ = fetchAll(4)
		time.Sleep(10 * time.Millisecond)
	}
}

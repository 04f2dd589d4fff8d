// Control: per-request watchers on a context with a 200 ms timeout: each ends when its context does.
// Expect: none
package main

import (
	"context"
	"time"
)

func main() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		go func() {
			defer cancel()
			<-ctx.Done()
		}()
		time.Sleep(20 * time.Millisecond)
	}
}

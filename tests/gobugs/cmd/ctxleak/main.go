// Bug: context never cancelled: each request derives a cancellable context and starts a watcher on ctx.Done(), but never calls cancel.
// Expect: goroutine_leak
package main

import (
	"context"
	"time"
)

func watch(ctx context.Context, id int) {
	<-ctx.Done() // want
	_ = id
}

func handle(parent context.Context, id int) {
	ctx, cancel := context.WithCancel(parent)
	_ = cancel // the defer cancel() was forgotten
	go watch(ctx, id)
}

func main() {
	root := context.Background()
	for i := 0; ; i++ {
		handle(root, i)
		time.Sleep(20 * time.Millisecond)
	}
}

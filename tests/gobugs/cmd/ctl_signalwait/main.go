// Control: a daemon whose main waits for SIGTERM on a signal channel while a worker polls.
// Expect: none
package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	go func() {
		for {
			time.Sleep(100 * time.Millisecond)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
